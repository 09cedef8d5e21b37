"""The exception root of One Time Chat.

Every error a user may see derives from :class:`OTCError`. Its docstring (or
the message given when it is raised) is the user's text: the CLI prints it
after ``ERROR:`` on one line and exits non-zero. Anything else that escapes is
a bug and is reported as such, without its arguments (they could hold
secrets).
"""

from __future__ import annotations


class OTCError(Exception):
    """Something went wrong."""

    #: A short stable identifier for scripts and the RPC (documented per part).
    code: str = "error"
    #: The process exit status the CLI uses for this error.
    exit_status: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.user_text())
        self.message = message

    @classmethod
    def user_text(cls) -> str:
        doc = (cls.__doc__ or cls.code).strip()
        return " ".join(doc.split("\n\n")[0].split())

    def __str__(self) -> str:
        return self.message or self.user_text()


class UsageError(OTCError):
    """The command line was not understood."""

    code = "usage"
    exit_status = 2


class PackageRefused(OTCError):
    """Package refused: it is not a valid package for this device."""

    code = "rejected"


class MalformedPackage(PackageRefused):
    """Package refused: it is not a well-formed package."""

    code = "malformed"


class WithdrawnFormat(MalformedPackage):
    """Package refused: it is an OTC1 (package format v1) package, which is withdrawn; the sender must pair again."""

    code = "withdrawn-format"


class InvalidPackage(PackageRefused):
    """Package refused: it failed authentication; nothing was decrypted."""

    code = "invalid"


# -- attachments (onetimechat/attachment.py, docs/attachments.md) ------------------------------------------


class FileNameRefused(PackageRefused):
    """File refused: its name is empty, too long, or holds a path separator or a control character."""

    code = "file-name"


class FileSizeMismatch(PackageRefused):
    """File part refused: its length disagrees with the size the file's header announced."""

    code = "file-size"


class FilePartInvalid(PackageRefused):
    """File part refused: it failed authentication (altered, or not of this file); nothing was decrypted."""

    code = "file-tampered"


class FilePartOrder(PackageRefused):
    """File part refused: it came out of order (a part before it is missing or was moved); nothing was decrypted."""

    code = "file-order"


class FilePartDuplicate(PackageRefused):
    """File part refused: this part of the file was already received (a duplicate)."""

    code = "file-duplicate"


class FileUnknown(PackageRefused):
    """File part refused: this device holds no header for its file (unknown, or finished)."""

    code = "file-unknown"


class FileIdTaken(PackageRefused):
    """File refused: its header reuses the id of a file this device is already sending or receiving."""

    code = "file-id"


class FileChanged(PackageRefused):
    """File refused: its bytes changed while it was being sent and no longer match the fingerprint confirmed."""

    code = "file-changed"
