"""The pad device: holds the pads and does every encryption itself.

Layers, from the inside out:

* :mod:`onetimechat.package` (shared with the laptop) -- the package format, pure functions over bytes;
* :mod:`device.intervals` -- the interval set that records consumed pad;
* :mod:`device.storage` -- the pad store (SQLite metadata, one pad file each);
* :mod:`device.engine` -- the pad rules of DESIGN.md over the store;
* :mod:`onetimechat.cli.device` -- the ``otc device`` and ``otc pad`` commands.
"""
