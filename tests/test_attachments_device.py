"""Attachments on the device (device/files.py, onetimechat/attachment.py, docs/attachments.md).

Two devices share a pad (tests/conftest.py make_pair). The attackers are written here against the documented
byte layout (docs/attachments.md), never with the code they attack: a hostile relay that alters, moves,
repeats, swaps or cuts parts; a hostile laptop that feeds its device other bytes than the file it confirmed;
a malicious peer device that sends a header naming a path.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.confirm import ConfirmRequest, FileSummary
from device.engine import Device
from device.storage.lock import LockState
from device.touchscreen.testing import Screen, open_app
from device.ui import ConfirmView, Console, PinStatus, Snapshot
from onetimechat import attachment as att
from onetimechat import package as fmt
from onetimechat.errors import (
    FileChanged,
    FileNameRefused,
    FilePartDuplicate,
    FilePartInvalid,
    FilePartOrder,
    FileSizeMismatch,
    FileUnknown,
    InvalidPackage,
    PackageRefused,
)
from onetimechat.package import Kind
from tests.conftest import make_pair

PART = att.PART_SIZE
PART_HEADER = 26  # "OTCF" | version | file_id (16) | index (4) | last (1), as docs/attachments.md gives it


class Owner:
    """Approves every request and remembers what it was shown."""

    def __init__(self) -> None:
        self.asked: list[ConfirmRequest] = []
        self.answer = True

    def ask(self, request: ConfirmRequest, timeout: float | None = None) -> bool:
        self.asked.append(request)
        return self.answer


@pytest.fixture
def devices(tmp_path):
    home_a, home_b, _ = make_pair(tmp_path, size=1 << 23)
    owner = Owner()
    alice, bob = Device.open(home_a, owner), Device.open(home_b)
    yield alice, bob, owner
    alice.close()
    bob.close()


def send_all(alice: Device, data: bytes, name: str = "report.pdf", otp: bool = False):
    header, packaged = alice.files.begin("bob", name, len(data), hashlib.sha256(data).digest(), otp=otp)
    parts = []
    for i in range(header.parts):
        part, last = alice.files.seal(header.file_id, i, data[i * PART : (i + 1) * PART])
        assert last == (i == header.parts - 1)
        parts.append(bytes(part))
    return header, bytes(packaged.package), parts


def receive_all(bob: Device, header_package: bytes, parts: list[bytes]) -> bytes:
    opened = bob.unpackage(header_package)
    assert opened.to_json()["kind"] == "file"
    out = b""
    for part in parts:
        data, info = bob.files.open_part(part)
        out += data
    assert info["complete"]
    return out


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 2 * PART + 1])
def test_files_of_every_size_arrive_identical(devices, size):
    alice, bob, owner = devices
    data = os.urandom(size)
    header, package, parts = send_all(alice, data)
    assert len(parts) == max(1, -(-size // PART))
    assert receive_all(bob, package, parts) == data
    # The owner was shown the file itself: its name, size and fingerprint, as a file.
    (request,) = owner.asked
    assert request.kind == "file"
    assert request.file == FileSummary("report.pdf", size, hashlib.sha256(data).hexdigest(), "stream")
    assert hashlib.sha256(data).hexdigest()[:4] in request.plaintext.decode()


def test_the_file_key_never_leaves_the_device(devices):
    """The key comes from the device's random source; no answer to the laptop, on either side, holds it."""
    alice, bob, _ = devices
    drawn = os.urandom(16 + 32 + 7)
    alice.random = lambda n: drawn[:n]
    key, prefix = drawn[16:48], drawn[48:]
    data = b"x" * 1000
    header, package, parts = send_all(alice, data)
    answers = [repr(header.public()), repr(bob.unpackage(package).to_json()),
               repr(alice.files.resume(header.file_id)), repr(bob.files.info(header.file_id))]
    answers += [p.hex() for p in parts] + [repr(bob.files.open_part(p)) for p in parts]
    for answer in answers:
        assert key.hex() not in answer and repr(key) not in answer and prefix.hex() not in answer
    # The header travels under the pad: its package holds no key in the clear either.
    assert key not in package


@contextmanager
def file_card(file: FileSummary) -> Iterator[tuple[Any, Screen]]:
    """The touchscreen app showing ``file`` for the owner to confirm (sending to bob), and its screen."""
    view = ConfirmView(request_id=1, contact="bob", kind="file", text=file.describe(), consumes=125,
                       left_after=32_000, deadline=5042.5, queued=0, file=file)
    app = open_app(Console("alice", "touchscreen"), monotonic=lambda: 5000.0, wall=lambda: 1.7e9)
    try:
        screen = Screen(app)
        app.render(Snapshot(device_name="alice", lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                            confirm=view))
        yield app, screen
    finally:
        app.close()


def test_confirm_screen_shows_a_file_apart_from_a_text(tmp_path):
    with file_card(FileSummary("holiday photos.zip", 3_500_000, "ab" * 32, "stream")) as (app, screen):
        assert screen.texts("title") == ["Send a file to"]
        assert screen.texts("recipient") == ["bob"]
        assert screen.texts("file-badge") == ["FILE"]
        assert screen.texts("file-name") == ["holiday photos.zip"]
        assert screen.texts("file-size") == ["3,500,000 bytes (3.3 MiB)"]
        assert screen.texts("fingerprint") == [" ".join(["abab"] * 8)] * 2
        assert screen.texts("message") == []  # not drawn as a message's text
        assert screen.texts("pad") == ["Uses 125 pad bytes · 32,000 bytes left after"]
        assert screen.target("accept").enabled  # nothing to scroll: it is all on the card
        # A text is still drawn as a message.
        app.render(Snapshot(device_name="alice", lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                            confirm=ConfirmView(request_id=2, contact="bob", kind="text", text="hello",
                                                consumes=21, left_after=32_000, deadline=5042.5, queued=0)))
        assert screen.texts("title") == ["Encrypt for"] and screen.texts("file-badge") == []
        assert screen.texts("message") == ["hello"]


def test_a_declined_file_sends_nothing_and_spends_no_pad(devices):
    alice, _, owner = devices
    owner.answer = False
    before = alice.store.pads("bob")[0].send_left
    with pytest.raises(Exception) as caught:
        alice.files.begin("bob", "a.txt", 3, hashlib.sha256(b"abc").digest())
    assert caught.value.code == "declined"
    assert alice.store.pads("bob")[0].send_left == before
    assert alice.store.settings_with_prefix("file-out:") == {}


# -- a hostile relay: written here, from the byte layout ---------------------------------------------------


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]


def with_index(blob: bytes, index: int) -> bytes:
    return blob[:21] + struct.pack(">I", index) + blob[25:]


@pytest.fixture
def three_parts(devices):
    alice, bob, _ = devices
    data = os.urandom(2 * PART + 5)
    header, package, parts = send_all(alice, data)
    bob.unpackage(package)
    return bob, header, parts, data


@pytest.mark.parametrize("where", ["header", "index", "ciphertext", "tag", "file_id"])
def test_an_altered_part_is_refused_and_releases_nothing(three_parts, where):
    bob, header, parts, _ = three_parts
    at, code = {"header": (4, "malformed"), "index": (24, "file-order"), "file_id": (5, "file-unknown"),
                "ciphertext": (PART_HEADER + 100, "file-tampered"), "tag": (len(parts[0]) - 1, "file-tampered")}[where]
    with pytest.raises(PackageRefused) as caught:
        bob.files.open_part(flip(parts[0], at))
    assert caught.value.code == code
    # Nothing moved: the genuine part still opens first.
    assert bob.files.open_part(parts[0])[1]["index"] == 0


def test_a_part_moved_to_another_place_fails_its_tag(three_parts):
    bob, _, parts, _ = three_parts
    bob.files.open_part(parts[0])
    with pytest.raises(FilePartInvalid):
        bob.files.open_part(with_index(parts[2], 1))  # part 2 presented as part 1


def test_reordered_parts_are_refused(three_parts):
    bob, _, parts, _ = three_parts
    with pytest.raises(FilePartOrder):
        bob.files.open_part(parts[1])
    bob.files.open_part(parts[0])
    with pytest.raises(FilePartOrder):
        bob.files.open_part(parts[2])


def test_a_duplicated_part_is_refused(three_parts):
    bob, _, parts, _ = three_parts
    first = bob.files.open_part(parts[0])
    second = bob.files.open_part(parts[1])
    third = bob.files.open_part(parts[2])
    # The last two parts given may be given again (their laptop may have been cut before it saved them: it saves
    # one while the device opens the next)...
    assert bob.files.open_part(parts[2]) == third
    assert bob.files.open_part(parts[1]) == second
    assert bob.files.open_part(parts[2]) == third
    # ...but an earlier one is a duplicate.
    with pytest.raises(FilePartDuplicate):
        bob.files.open_part(parts[0])
    assert first[1]["index"] == 0


def test_a_truncated_file_never_completes_and_a_fake_last_flag_fails(three_parts):
    bob, _, parts, _ = three_parts
    bob.files.open_part(parts[0])
    info = bob.files.open_part(parts[1])[1]
    assert not info["complete"] and not info["last"]
    # The relay marks part 1 as the last, to end the file early: the nonce differs, the tag fails.
    forged = parts[1][:25] + b"\x01" + parts[1][26:]
    with pytest.raises(FilePartInvalid):
        bob.files.open_part(forged)
    # Cutting a part short fails too.
    with pytest.raises(FilePartInvalid):
        bob.files.open_part(parts[2][:-2])


def test_a_part_of_another_file_is_refused(devices):
    alice, bob, _ = devices
    one = send_all(alice, b"A" * 10, "a.txt")
    two = send_all(alice, b"B" * 10, "b.txt")
    bob.unpackage(one[1])
    bob.unpackage(two[1])
    # Part 0 of file two relabelled as part 0 of file one (the file id is in the clear).
    relabelled = two[2][0][:5] + one[0].file_id + two[2][0][21:]
    with pytest.raises(FilePartInvalid):
        bob.files.open_part(relabelled)
    assert bob.files.open_part(one[2][0])[0] == b"A" * 10


def test_parts_of_a_file_whose_header_never_came_are_refused(devices):
    alice, bob, _ = devices
    _, _, parts = send_all(alice, b"hello")
    with pytest.raises(FileUnknown):
        bob.files.open_part(parts[0])


# -- a hostile laptop: it feeds its device bytes other than the file confirmed -------------------------------


def test_the_last_part_is_refused_when_the_file_does_not_match_its_fingerprint(devices):
    alice, _, _ = devices
    data = os.urandom(PART + 10)
    header, _ = alice.files.begin("bob", "a.bin", len(data), hashlib.sha256(data).digest())
    alice.files.seal(header.file_id, 0, data[:PART])
    with pytest.raises(FileChanged):
        alice.files.seal(header.file_id, 1, b"\0" * 10)
    # The send is over: its key is forgotten, nothing more is sealed.
    with pytest.raises(FileUnknown):
        alice.files.seal(header.file_id, 1, data[PART:])
    assert alice.store.settings_with_prefix("file-out:") == {}


def test_a_part_sealed_again_must_be_the_same_bytes(devices):
    """A second plaintext under one key and nonce would break the cipher: the device refuses it."""
    alice, _, _ = devices
    data = os.urandom(2 * PART)
    header, _ = alice.files.begin("bob", "a.bin", len(data), hashlib.sha256(data).digest())
    first, _ = alice.files.seal(header.file_id, 0, data[:PART])
    again, _ = alice.files.seal(header.file_id, 0, data[:PART])
    assert again == first  # deterministic: nothing new is revealed
    with pytest.raises(FileChanged):
        alice.files.seal(header.file_id, 0, os.urandom(PART))


def test_parts_are_fed_in_order_and_sized_by_the_header(devices):
    alice, _, _ = devices
    data = os.urandom(2 * PART)
    header, _ = alice.files.begin("bob", "a.bin", len(data), hashlib.sha256(data).digest())
    with pytest.raises(FilePartOrder):
        alice.files.seal(header.file_id, 1, data[PART:])
    with pytest.raises(FileSizeMismatch):
        alice.files.seal(header.file_id, 0, data[: PART - 1])
    with pytest.raises(FileSizeMismatch):
        alice.files.seal(header.file_id, 2, b"")


def test_a_restarted_device_resumes_from_the_first_part_and_reseals_identically(tmp_path):
    home_a, home_b, _ = make_pair(tmp_path, size=1 << 23)
    data = os.urandom(2 * PART + 3)
    with Device.open(home_a) as alice:
        header, _ = alice.files.begin("bob", "a.bin", len(data), hashlib.sha256(data).digest())
        sent = [bytes(alice.files.seal(header.file_id, i, data[i * PART : (i + 1) * PART])[0])  # type: ignore
                for i in range(2)]
    with Device.open(home_a) as alice:
        assert alice.files.resume(header.file_id)["next"] == 0  # the running hash did not survive
        assert alice.files.resume(header.file_id)["sealed"] == 2
        with pytest.raises(FilePartOrder):
            alice.files.seal(header.file_id, 2, data[2 * PART :])
        assert alice.files.seal(header.file_id, 0, data[:PART], want=False) == (None, False)
        assert bytes(alice.files.seal(header.file_id, 1, data[PART : 2 * PART])[0]) == sent[1]  # type: ignore
        last, done = alice.files.seal(header.file_id, 2, data[2 * PART :])
        assert done and last is not None


# -- names ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "a\\b", "bell\x07", "new\nline", "rtl\u202eexe.txt",
                                  ".", "..", "", "x" * 256])
def test_a_name_with_a_path_or_control_character_is_refused_when_sending(devices, name):
    alice, _, owner = devices
    with pytest.raises(FileNameRefused):
        alice.files.begin("bob", name, 1, hashlib.sha256(b"x").digest())
    assert owner.asked == []  # refused before the owner is asked


def test_a_malicious_peer_cannot_name_a_path(devices):
    """The peer's device is hostile: it seals (under the pad it shares) a header written here by hand."""
    alice, bob, _ = devices
    name = b"../../.bashrc"
    body = struct.pack(">BBB16sQI32s32s7sH", 1, 1, 1, os.urandom(16), 5, PART, bytes(32), os.urandom(32),
                       os.urandom(7), len(name)) + name
    package = alice.seal("bob", Kind.FILE_PART, body).package
    with pytest.raises(FileNameRefused):
        bob.unpackage(package)
    assert bob.store.settings_with_prefix("file-in:") == {}


def test_a_malicious_peer_cannot_send_a_part_larger_than_its_header_says(devices):
    alice, bob, _ = devices
    header, package, parts = send_all(alice, b"abc")
    bob.unpackage(package)
    # The peer's device seals a part that disagrees with the size its own header announced (it has the key).
    liar = att.FileHeader(header.file_id, att.STREAM, 4, PART, header.sha256, header.key, header.prefix, "x")
    longer = att.seal_part(liar, att.stream_key(liar), 0, b"abcd")
    with pytest.raises(FileSizeMismatch):
        bob.files.open_part(longer)


# -- --otp: the whole file under the pad ----------------------------------------------------------------------


def test_otp_spends_exactly_each_parts_length_plus_16(devices):
    alice, bob, owner = devices
    data = os.urandom(PART + 100)
    left = alice.store.pads("bob")[0].send_left
    header, package, parts = send_all(alice, data, otp=True)
    lengths = [fmt.parse(p).length for p in parts]
    header_l = fmt.parse(package).length
    assert left - alice.store.pads("bob")[0].send_left == header_l + 16 + sum(n + 16 for n in lengths)
    assert owner.asked[0].consumes == header_l + 16 + sum(n + 16 for n in lengths)
    assert owner.asked[0].file.mode == "otp"
    assert all(fmt.parse(p).kind == Kind.FILE_PART for p in parts)
    bob.unpackage(package)
    out = b"".join(bob.unpackage(p).plaintext for p in parts)
    assert out == data
    # A relay replaying an --otp part gets the pad's replay refusal: nothing is released twice.
    with pytest.raises(Exception) as caught:
        bob.unpackage(parts[0])
    assert caught.value.code == "replay"


def test_otp_refuses_a_file_larger_than_the_pad_left(devices):
    alice, _, owner = devices
    with pytest.raises(Exception) as caught:
        alice.files.begin("bob", "big.bin", 8 << 20, bytes(32), otp=True)
    assert caught.value.code == "pad-exhausted" and "without --otp" in str(caught.value)
    assert owner.asked == []


def test_an_otp_part_altered_by_the_relay_fails_the_pads_tag(devices):
    alice, bob, _ = devices
    _, package, parts = send_all(alice, b"secret plans", otp=True)
    bob.unpackage(package)
    with pytest.raises(InvalidPackage):
        bob.unpackage(flip(parts[0], 40))


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_stream_parts_round_trip(data, part_size):
    header = att.FileHeader(os.urandom(16), att.STREAM, len(data), part_size, hashlib.sha256(data).digest(),
                            os.urandom(32), os.urandom(7), "f")
    aead = att.stream_key(header)
    out = b""
    for i in range(header.parts):
        blob = att.seal_part(header, aead, i, data[i * part_size : (i + 1) * part_size])
        index, chunk = att.open_part(header, aead, blob)
        assert index == i
        out += chunk
    assert out == data
    assert att.parse_header(att.header_body(header)) == header


def test_a_thief_of_a_locked_sd_card_finds_no_file_key(tmp_path):
    """The SD-card thief: a PIN-locked home is scanned byte by byte for the file's key, in flight and after."""
    from device.storage.lock import StoreLock
    from device.storage.padstore import PadStore
    from tests.test_pinlock import PIN, home_contains, pinned_pair

    home_a, _, _, _ = pinned_pair(tmp_path)
    lock = StoreLock(home_a)
    assert lock.unlock(PIN).ok
    drawn = os.urandom(16 + 32 + 7)
    key = drawn[16:48]
    data = os.urandom(PART + 1)
    with PadStore(home_a, storage_key=lock.key) as store, Device(store) as alice:
        alice.random = lambda n: drawn[:n]
        header, _ = alice.files.begin("bob", "a.bin", len(data), hashlib.sha256(data).digest())
        alice.files.seal(header.file_id, 0, data[:PART])
        # Mid-send: the key is in the store, sealed.
        assert not home_contains(home_a, key)
        (record,) = store.settings_with_prefix("file-out:").values()
        opened = base64.b64decode(record)
        assert base64.b64encode(key) not in opened and key not in opened  # sealed again inside the sealed store
        alice.files.seal(header.file_id, 1, data[PART:])
        assert alice.files.end(header.file_id)
        assert store.settings_with_prefix("file-") == {}
    assert not home_contains(home_a, key)


# -- the receiving laptop's name for a file ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_a_saved_name_is_always_a_plain_visible_file_name(name):
    from client.files import TEMP_PREFIX, safe_name

    safe = safe_name(name)
    assert safe and len(safe) <= 200
    assert "/" not in safe and "\\" not in safe and "\0" not in safe
    assert not safe.startswith(".") and not safe.startswith(TEMP_PREFIX)
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in safe)
    assert safe not in (".", "..")


@pytest.mark.parametrize("name,safe", [("report.pdf", "report.pdf"), (".bashrc", "bashrc"), ("...", "file"),
                                       ("CON.txt", "_CON.txt"), ('a<b>:c"d|e?f*g', "a_b__c_d_e_f_g"),
                                       (" spaced ", "spaced")])
def test_saved_names(name, safe):
    from client.files import safe_name

    assert safe_name(name) == safe


def test_a_saved_name_never_overwrites(tmp_path):
    from client.files import unique_path

    (tmp_path / "a.txt").write_text("mine")
    (tmp_path / "a (1).txt").write_text("mine too")
    assert unique_path(tmp_path, "a.txt") == tmp_path / "a (2).txt"
    (tmp_path / "noext").write_text("x")
    assert unique_path(tmp_path, "noext") == tmp_path / "noext (1)"
