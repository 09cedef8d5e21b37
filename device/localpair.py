"""A pad between two devices on one machine (``otc pad pair-local``).

For development, tests and the demo: both homes are on this machine, so this
machine saw the pad. Pairing in person (``provisioning/``) is the real thing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from device.errors import ContactExists, StoreError
from device.padsize import check_size
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
        if store.free_space() < size + (64 << 20):
            raise StoreError(f"Not enough free disk space for {store.device_name}'s copy of a {size}-byte pad.")
    pad_id = random_bytes(16)
    mailbox_ab, mailbox_ba = random_bytes(16), random_bytes(16)
    # Each copy is a partial pad of its store until both are whole; then each store installs its own (moves it
    # into place and adds it in one crash-safe step: device/storage/partials.py).
    try:
        _write_both([a, b], pad_id, size, _chunks(random_bytes, size), progress)
        a.partials.install(pad_id, contact=b.device_name, peer_device_id=b.device_id, role=INITIATOR, size=size,
                           mailbox_out=mailbox_ab, mailbox_in=mailbox_ba, confirmed=True)
    except BaseException:
        a.partials.discard(pad_id)
        b.partials.discard(pad_id)
        raise
    try:
        b.partials.install(pad_id, contact=a.device_name, peer_device_id=a.device_id, role=RESPONDER, size=size,
                           mailbox_out=mailbox_ba, mailbox_in=mailbox_ab, confirmed=True)
    except BaseException:
        a.remove_unused_pad(pad_id)
        b.partials.discard(pad_id)
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


def _write_both(stores: list[PadStore], pad_id: bytes, size: int, chunks: Iterator[bytes],
                progress: Callable[[int], None] | None) -> None:
    """Write the same ``size`` bytes into each store's partial pad ``pad_id``, each encrypted as its home keeps
    pads (the store syncs them as it installs them)."""
    fds: list[int] = []
    try:
        for store in stores:
            fds.append(store.partials.begin(pad_id, size))
        ciphers = [store.pad_cipher(pad_id) for store in stores]
        written = 0
        for chunk in chunks:
            for fd, cipher in zip(fds, ciphers):
                _pwrite_all(fd, cipher.crypt(chunk, written) if cipher else chunk, written)
            written += len(chunk)
            if progress:
                progress(written)
        if written != size:
            raise ValueError("pad source gave the wrong number of bytes")
    finally:
        for fd in fds:
            os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _chunks(random_bytes: RandomBytes, size: int) -> Iterator[bytes]:
    left = size
    while left:
        n = min(left, CHUNK)
        yield random_bytes(n)
        left -= n
