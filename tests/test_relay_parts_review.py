"""An outside review (red team 24) of the content files of a SQLite relay (relay/parts.py): its quotas, its disk
watermark, and a sync that fails after a commit. Ported as written, but for the part sizes: parts under
relay.app.INLINE_RAW_BYTES are now kept in their rows (the fix for the first finding), so the file path is
attacked with parts above it.

Claims attacked (docs/relay-protocol.md, relay/config.py): an address may have at most ``address_max_bytes``
stored at once; the relay refuses new messages (507) before its filesystem runs out. A raw part of 1 byte is
counted as 2 bytes + MESSAGE_OVERHEAD (256) against the address, but it is a file of its own: a 4 KiB block,
an inode and a directory entry. So the disk an address can take is about 16 times its quota, and the inodes it
can take are never watched (check_disk reads f_bavail only): an ext4 SD card of 32 GB has about 2 million
inodes, 2 addresses' worth of 1-byte parts."""

from __future__ import annotations

import os
import threading
from collections import namedtuple

from relay.app import INLINE_RAW_BYTES, create_app
from relay.config import RelayConfig

OCTETS = "application/octet-stream"


def _app(tmp_path, **settings):
    config = RelayConfig(db=f"sqlite:///{tmp_path}/relay.db", rate_limit=0, max_waits_per_address=0,
                         address_new_mailboxes=0, sweep_interval=3600.0, **settings)
    app = create_app(config)
    return app, app.test_client(), app.extensions["otc_relay"]


def test_tiny_raw_parts_take_far_more_disk_than_the_address_quota(tmp_path) -> None:
    quota = 256 * 1024
    app, client, relay = _app(tmp_path, address_max_bytes=quota, min_free_bytes=0)
    try:
        accepted = 0
        for n in range(5000):
            r = client.post(f"/v1/send-bin?mailbox=box{n // 900}&id=k{n}", data=b"x", content_type=OCTETS,
                            environ_base={"REMOTE_ADDR": "203.0.113.7"})
            if r.status_code != 200:
                assert r.status_code in (413, 507, 429) or r.status_code < 500, r.text
                break
            accepted += 1
        folder = relay.parts.folder
        on_disk = sum(e.stat().st_blocks * 512 for e in os.scandir(folder))
        files = len(os.listdir(folder))
        assert on_disk <= 2 * quota, (f"{accepted} one-byte parts accepted under a {quota >> 10} KiB address "
                                      f"quota take {on_disk >> 10} KiB of disk in {files} files (inodes)")
    finally:
        relay.close()


def test_inodes_running_out_is_a_full_disk(tmp_path, monkeypatch) -> None:
    """Blocks free, inodes gone: the watermark should refuse (507) as for blocks; it does not look."""
    app, client, relay = _app(tmp_path, min_free_bytes=1 << 20)
    real = os.statvfs
    Stat = namedtuple("Stat", "f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_favail f_flag "
                              "f_namemax")

    def statvfs(path):
        s = real(path)
        return Stat(s.f_bsize, s.f_frsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, 0, 0, s.f_flag,
                    s.f_namemax)

    monkeypatch.setattr(os, "statvfs", statvfs)
    try:
        r = client.post("/v1/send-bin?mailbox=box&id=k", data=b"x", content_type=OCTETS,
                        environ_base={"REMOTE_ADDR": "203.0.113.8"})
        assert r.status_code == 507, f"no inode left, yet the relay took a content file ({r.status_code})"
    finally:
        relay.close()


def test_sync_failing_after_the_commit_loses_the_part_that_was_kept(tmp_path, monkeypatch) -> None:
    """relay/storage/sql.py _lead: the WAL's fdatasync runs after COMMIT; if it fails, every op of the batch is
    told "nothing was kept" -- but the row is committed. Relay.send_raw then unlinks the content file the row
    names. The sender's retry (same id) is answered duplicate=True with that ref, and the part is gone: the
    receiver's batch skips it (Relay._with_contents), so its file can never complete."""
    from relay.storage import sqlite as sqlite_store

    app, client, relay = _app(tmp_path, min_free_bytes=0)
    real = os.fdatasync
    state: dict = {"fail": None}

    def flaky(fd):
        # Only the send's own thread fails: a commit of another thread (the relay's sweep) syncing first must
        # not take the failure (it did, on a busy machine, and the send was answered 200).
        if state["fail"] == threading.get_ident():
            state["fail"] = None
            raise OSError(5, "Input/output error")
        return real(fd)

    monkeypatch.setattr(sqlite_store.os, "fdatasync", flaky)
    store_send = relay.store.send

    def send(*args, **kwargs):  # the sync of the send's own commit fails (EIO), once
        state["fail"] = threading.get_ident()
        return store_send(*args, **kwargs)

    monkeypatch.setattr(relay.store, "send", send)
    try:
        part = os.urandom(INLINE_RAW_BYTES + 1000)  # a part kept in a content file
        first = client.post("/v1/send-bin?mailbox=box&id=file-x-0", data=part, content_type=OCTETS)
        assert first.status_code >= 500  # 503: the sender retries
        monkeypatch.setattr(relay.store, "send", store_send)
        again = client.post("/v1/send-bin?mailbox=box&id=file-x-0", data=part, content_type=OCTETS)
        assert again.status_code == 200, again.text
        from onetimechat import relaywire

        r = client.post("/v1/receive-bin", json={"mailboxes": {"box": 0}})
        batch, _ = relaywire.unframe(r.data)
        got = [bytes(data) for _, data in batch]
        assert got == [part], (f"the relay answered the retry {again.json} but delivers {len(got)} messages: "
                               "the part's content file was unlinked under a committed row")
    finally:
        relay.close()
