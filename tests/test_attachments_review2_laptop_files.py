"""Red team 24: the receiving laptop's record of a file (client/files.py IncomingFiles.part) with two otc
processes on one home (``otc chat`` running while ``otc receive`` is typed; nothing in client/ serialises them).

Claim attacked (docs/attachments.md): a cut or a repeat "only repeats a part, known as saved or deduplicated";
a part is never lost. IncomingFiles.part reads the record, writes the part, and saves ``next = index + 1`` with
no lock: a slow process saving part 0 overwrites the record of a faster one that saved parts 0 to 2, so the
record goes back to next = 1 while the relay cursor (and, acked, the relay) are past part 2 and the device has
opened part 3. Part 3 is then "missing" (FileSaveError) for ever: the mailbox is stuck and the file lost."""

from __future__ import annotations

import hashlib

import pytest

from client.errors import FileSaveError
from client.files import IncomingFiles
from client.mailstore import MailStore

URL = "http://pad.invalid:7000"
PART = 1024


class _Device:
    def call(self, method, **params):
        return {}


def test_two_receivers_regress_the_record_and_the_file_is_lost(tmp_path) -> None:
    home, downloads = tmp_path / "home", tmp_path / "dl"
    parts = [bytes([i]) * PART for i in range(5)]
    whole = b"".join(parts)
    info = {"id": "ab" * 16, "name": "f.bin", "size": len(whole), "sha256": hashlib.sha256(whole).hexdigest(),
            "parts": 5, "part_size": PART}
    fast = IncomingFiles(MailStore(URL, home), _Device(), downloads)   # otc chat
    slow = IncomingFiles(MailStore(URL, home), _Device(), downloads)   # otc receive, same home
    fast.header("alice", info)

    def part_info(i):
        return {"id": info["id"], "index": i, "last": i == 4, "parts": 5, "size": len(whole),
                "complete": i == 4}

    real_write = slow._write

    def slow_write(record, index, data):  # the slow process is descheduled while it writes part 0...
        real_write(record, index, data)
        for i in range(3):  # ...and the other saves parts 0, 1 and 2 meanwhile (its cursor moves past them)
            fast.part("alice", part_info(i), parts[i])

    slow._write = slow_write
    slow.part("alice", part_info(0), parts[0])
    slow._write = real_write

    # The relay's next message is part 3 (the cursor is past 2); the device opens it and the laptop saves it.
    try:
        fast.part("alice", part_info(3), parts[3])
        fast.part("alice", part_info(4), parts[4])
    except FileSaveError as exc:
        pytest.fail(f"a part saved by one process was un-saved by the other: {exc}")


def test_a_slow_receiver_does_not_bring_back_a_file_the_other_finished(tmp_path) -> None:
    """(Added with the fix.) The slow process saves part 0 after the fast one saved the whole file and forgot
    its record: the record is not brought back (a file received for ever after), and the file is whole."""
    home, downloads = tmp_path / "home", tmp_path / "dl"
    parts = [bytes([i + 1]) * PART for i in range(3)]
    whole = b"".join(parts)
    info = {"id": "cd" * 16, "name": "g.bin", "size": len(whole), "sha256": hashlib.sha256(whole).hexdigest(),
            "parts": 3, "part_size": PART}
    fast = IncomingFiles(MailStore(URL, home), _Device(), downloads)
    slow = IncomingFiles(MailStore(URL, home), _Device(), downloads)
    fast.header("alice", info)

    def part_info(i):
        return {"id": info["id"], "index": i, "last": i == 2, "parts": 3, "size": len(whole), "complete": i == 2}

    real_write = slow._write

    def slow_write(record, index, data):
        for i in range(3):  # the other process receives the whole file before this write lands
            fast.part("alice", part_info(i), parts[i])
        real_write(record, index, data)

    slow._write = slow_write
    slow.part("alice", part_info(0), parts[0])
    assert (downloads / "g.bin").read_bytes() == whole
    assert not any(info["id"] in name for name in MailStore(URL, home).settings_with_prefix(""))
    assert sorted(p.name for p in downloads.iterdir()) == ["g.bin"]  # no stray temporary file either
