"""The pad device: holds the pads and does every encryption itself.

Layers, from the inside out:

* :mod:`onetimechat.package` (shared with the laptop) -- the package format, pure functions over bytes;
* :mod:`device.intervals` -- the interval set that records consumed pad;
* :mod:`device.storage` -- the pad store (SQLite metadata, one pad file each) and, in
  :mod:`device.storage.padstore`, the seven rules of pad use of DESIGN.md as its named operations;
* :mod:`device.engine` -- making and opening packages with the bytes the store hands it, the owner's
  confirmation, the status report;
* the service: the RPC server, the screen, ceremonies, attribute keys and rooms;
* :mod:`onetimechat.cli.device` -- the ``otc device`` and ``otc pad`` commands.

docs/architecture.md gives the layers and the contracts that check them.
"""
