"""The device's pad store: SQLite metadata beside one preallocated file per pad.

* :mod:`device.storage.schema` -- the versioned schema and its upgrade steps;
* :mod:`device.storage.padfile` -- reading and destroying pad bytes;
* :mod:`device.storage.padstore` -- the store and the seven rules of pad use:
  named operations (reserve, send, receive, wipe, contacts, events, ...), the
  consumed-interval sets, the event log and crash recovery; its transactions
  and connections never leave this package;
* :mod:`device.storage.partials` -- a pad being made (``store.partials``): its
  files from the first byte, listed, swept, discarded, and installed as a pad
  in one crash-safe step; nothing outside this package handles the store's
  files;
* :mod:`device.storage.abe_tables`, :mod:`device.storage.clients_tables` --
  the SQL of the attribute-key and paired-laptop tables, for device/abe and
  device/clients.py.

Pad bytes are reached only through :class:`~device.storage.padfile.PadFile`,
so the PIN-locked store (a later issue) can put an encrypting file behind the
same interface without touching the pad rules.
"""

from device.storage.padstore import PadRecord, PadStore

__all__ = ["PadRecord", "PadStore"]
