"""Red team s32: the writer process runs ``new_store_id`` for any worker (it was added to ``OPS``, "all a writer
process will run"), though no worker ever needs it: only `otc relay new-identity` calls it, on a store of its
own, with no writer.

The attacker: code running in a worker (the process that parses clients' HTTP) writes a frame on its line to the
writer, ``(id, "new_store_id", (-1,), "")``. The writer checks only that the name is in OPS, commits it, and the
store's identity becomes -1: every relay process started on the store from then on names its store
"-000000000000001", which is no identity (not 16 lowercase hex digits): a laptop that recorded the store's
identity gets 409 store-changed with no usable identity, read as a plain refusal, on every read (stuck, never
reading that relay again); a laptop with none recorded reads it as a relay from before store identities and
acknowledges naming no store (the R3 protection is off on that store). With a string (SQLite keeps it: INTEGER
affinity) no relay process starts again.

Severity low: a worker runs as the relay's user, which can open the store anyway; but the writer's line is built
as a boundary (the op list, the restricted unpickler), and this widens it for nothing.
"""

from __future__ import annotations

import pickle
import struct

from client.relay import store_identity
from relay.storage import open_store
from tests.test_relay_writer import Linked


def test_a_worker_cannot_change_the_store_identity_through_the_writer(tmp_path):
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    linked = Linked(url)
    try:
        before = linked.store.store_id()
        line = linked.raw_line()
        try:
            data = pickle.dumps((1, "new_store_id", (-1,), ""))
            line.sendall(struct.pack(">I", len(data)) + data)
            line.settimeout(30)
            answer = line.recv(1 << 16)
        finally:
            line.close()
    finally:
        linked.close()
    store = open_store(url, pool_size=1)
    try:
        after = store.store_id()
    finally:
        store.close()
    assert after == before, (
        f"the writer ran new_store_id for a worker (answer {answer!r}): the store now names itself {after!r}, "
        f"which laptops take for no identity at all ({store_identity(after)!r})")
