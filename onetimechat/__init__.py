"""One Time Chat: end-to-end encrypted chat whose keys never touch the laptop."""

__version__ = "0.1.0"
