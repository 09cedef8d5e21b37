"""A pad between two devices on one machine (``otc pad pair-local``).

For development, tests and the demo: both homes are on this machine, so this
machine saw the pad. Pairing in person (``provisioning/``) is the real thing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

from device.errors import ContactExists, StoreError
from device.padsize import check_size
from device.storage.padfile import PadFile
from device.storage.padstore import INITIATOR, RESPONDER, PadStore

CHUNK = 1 << 20

RandomBytes = Callable[[int], bytes]


def pair_local(
    a: PadStore,
    b: PadStore,
    size: int,
    *,
    random_bytes: RandomBytes = os.urandom,
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """Make a pad of ``size`` bytes shared by ``a`` (initiator) and ``b``; return its pad_id.

    ``random_bytes(n)`` supplies pad bytes, ids and mailbox ids (injectable so
    tests can pin them).
    """
    check_size(size)
    if a.device_id == b.device_id:
        raise StoreError("A pad needs two different devices.")
    _check_contact(a, b)
    _check_contact(b, a)
    for store in (a, b):
        if shutil.disk_usage(store.home).free < size + (64 << 20):
            raise StoreError(f"Not enough free disk space in {store.home} for a {size}-byte pad.")
    pad_id = random_bytes(16)
    mailbox_ab, mailbox_ba = random_bytes(16), random_bytes(16)
    PadFile.create([a.pad_path(pad_id), b.pad_path(pad_id)], size, _chunks(random_bytes, size), progress,
                   ciphers=[a.pad_cipher(pad_id), b.pad_cipher(pad_id)])
    try:
        a.add_pad(contact=b.device_name, peer_device_id=b.device_id, pad_id=pad_id, role=INITIATOR,
                  size=size, mailbox_out=mailbox_ab, mailbox_in=mailbox_ba)
    except BaseException:
        a.pad_path(pad_id).unlink(missing_ok=True)
        b.pad_path(pad_id).unlink(missing_ok=True)
        raise
    try:
        b.add_pad(contact=a.device_name, peer_device_id=a.device_id, pad_id=pad_id, role=RESPONDER,
                  size=size, mailbox_out=mailbox_ba, mailbox_in=mailbox_ab)
    except BaseException:
        a.remove_unused_pad(pad_id)
        b.pad_path(pad_id).unlink(missing_ok=True)
        raise
    a.bind_identity(b.device_id, b.identity_public)  # each contact remembers the other's identity
    b.bind_identity(a.device_id, a.identity_public)
    return pad_id


def _check_contact(store: PadStore, peer: PadStore) -> None:
    """Refuse early if ``store`` already has a different device under ``peer``'s name."""
    known = store.contact_device(peer.device_name)
    if known is not None and known != peer.device_id:
        raise ContactExists(
            f"{store.device_name} already has a contact named {peer.device_name!r} for another device."
        )


def _chunks(random_bytes: RandomBytes, size: int) -> Iterator[bytes]:
    left = size
    while left:
        n = min(left, CHUNK)
        yield random_bytes(n)
        left -= n
