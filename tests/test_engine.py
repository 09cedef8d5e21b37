"""The pad engine's rules, each on the real engine over real files."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading

import pytest

from device.confirm import ConfirmRequest
from device.engine import ASK_MODE, Device
from device.errors import (
    ContactExists,
    Declined,
    OutOfRange,
    PadExhausted,
    Replay,
    UnknownContact,
    UnknownPad,
)
from device.localpair import pair_local
from device.storage.padstore import PadStore
from onetimechat import package as fmt
from onetimechat.errors import InvalidPackage, MalformedPackage, PackageRefused
from onetimechat.package import Kind
from tests.conftest import Counter, det_bytes, make_pair, pad_bytes, receive_state


def events(device: Device) -> list[dict]:
    return device.store.events(10_000)


def event_names(device: Device) -> list[str]:
    return [e["event"] for e in events(device)]


def test_round_trip_both_ways(pair):
    a, b, pad_id = pair
    for i in range(5):
        sent = a.package("bob", f"hello bob {i}".encode())
        got = b.unpackage(sent.package)
        assert (got.contact, got.plaintext, got.warnings) == ("alice", f"hello bob {i}".encode(), [])
        sent = b.package("alice", f"hello alice {i}".encode())
        got = a.unpackage(sent.package)
        assert (got.contact, got.plaintext, got.warnings) == ("bob", f"hello alice {i}".encode(), [])


@pytest.mark.parametrize("length", [0, 1, 100, 4096])
def test_package_size_and_exact_consumption(pair, length):
    a, b, pad_id = pair
    message = det_bytes("m", length)
    sent = a.package("bob", message)
    assert len(sent.package) == 49 + length
    contact = a.status()["contacts"][0]
    assert contact["send"]["used"] == 16 + length
    assert contact["pads"][0]["send"]["used"] == 16 + length
    assert b.unpackage(sent.package).plaintext == message
    assert b.status()["contacts"][0]["receive"]["used"] == 16 + length


def test_initiator_allocates_up_from_16_responder_down_from_the_end_less_16(pair):
    """Each side's first 16 bytes (R) are set aside: [0, 16) and [N-16, N) are never segments."""
    a, b, pad_id = pair
    size = 1 << 16
    first, second = a.package("bob", b"x" * 10), a.package("bob", b"y" * 5)
    assert (first.offset, second.offset) == (16, 16 + 26)
    first, second = b.package("alice", b"x" * 10), b.package("alice", b"y" * 5)
    assert first.offset == size - 16 - 26
    assert second.offset == size - 16 - 26 - 21


def test_used_segment_reads_back_as_zeros(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    before = pad_bytes(home_a, pad_id)
    assert before == pad_bytes(home_b, pad_id)
    with Device.open(home_a) as a, Device.open(home_b) as b:
        sent = a.package("bob", b"destroy me after use")
        start, end = sent.offset, sent.offset + sent.consumed
        after_a = pad_bytes(home_a, pad_id)
        assert after_a[start:end] == bytes(end - start)
        assert after_a[end:] == before[end:]  # nothing else was touched
        assert pad_bytes(home_b, pad_id)[start:end] == before[start:end]
        b.unpackage(sent.package)
        after_b = pad_bytes(home_b, pad_id)
        assert after_b[start:end] == bytes(end - start)
        assert after_b[end:] == before[end:]
        # Nothing is left waiting to be destroyed once the next commit runs.
        a.store.close()
        b.store.close()
    assert receive_state(home_a)["pending_wipe"] == []
    assert receive_state(home_b)["pending_wipe"] == []


def test_replay_is_refused_without_plaintext_and_changes_nothing(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    with Device.open(home_a) as a, Device.open(home_b) as b:
        sent = a.package("bob", b"pay the bearer 100")
        assert b.unpackage(sent.package).plaintext == b"pay the bearer 100"
        b.store.close()
        state = receive_state(home_b)
    with Device.open(home_b) as b:
        for _ in range(3):
            with pytest.raises(Replay) as info:
                b.unpackage(sent.package)
            assert "pay the bearer" not in str(info.value)
        assert event_names(b).count("replay") == 3
        b.store.close()
    assert receive_state(home_b) == state


def test_every_single_bit_flip_is_refused_and_changes_nothing(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    with Device.open(home_a) as a:
        a.package("bob", b"first, to move the receive state")
        earlier = a.package("bob", b"first, to move the receive state")
        sent = a.package("bob", b"flip any bit of me")
    with Device.open(home_b) as b:
        b.unpackage(earlier.package)
        b.store.close()
        state = receive_state(home_b)
        package = bytearray(sent.package)
        codes = set()
        for bit in range(len(package) * 8):
            flipped = bytearray(package)
            flipped[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(PackageRefused) as info:
                b.unpackage(bytes(flipped))
            codes.add(info.value.code)
            assert "flip any bit" not in str(info.value)
        b.store.close()
        assert receive_state(home_b) == state
        # Flips land on framing (malformed), pad_id (unknown pad), offset (outside
        # the half, or a segment whose tag fails) and the MAC'd bytes (invalid).
        assert {"malformed", "unknown-pad", "out-of-range", "invalid"} <= codes
        # The untouched package still opens: the forgeries did not poison it.
        assert b.unpackage(sent.package).plaintext == b"flip any bit of me"


def test_forgery_at_an_unreceived_segment_does_not_block_the_real_message(pair):
    a, b, pad_id = pair
    sent = a.package("bob", b"the real message")
    forged = bytearray(sent.package)
    forged[40] ^= 0xFF  # in the ciphertext
    with pytest.raises(InvalidPackage):
        b.unpackage(bytes(forged))
    assert b.unpackage(sent.package).plaintext == b"the real message"


def test_gaps_are_reported_and_late_messages_say_so(pair):
    a, b, pad_id = pair
    up = [a.package("bob", f"up {i}".encode()) for i in range(3)]
    down = [b.package("alice", f"down {i}".encode()) for i in range(3)]
    for receiver, label, msgs in ((b, "up", up), (a, "down", down)):
        assert receiver.unpackage(msgs[0].package).warnings == []
        got = receiver.unpackage(msgs[2].package)
        assert len(got.warnings) == 1 and got.warnings[0].startswith("gap: ")
        assert f"gap: {msgs[1].consumed} bytes" in got.warnings[0]
        late = receiver.unpackage(msgs[1].package)
        assert late.plaintext == f"{label} 1".encode()
        assert late.warnings and late.warnings[0].startswith("late: ")
        gap_events = [e for e in events(receiver) if e["event"] == "gap"]
        assert gap_events[-1]["offset"] == msgs[2].offset


def test_first_message_after_a_drop_reports_the_gap(pair):
    a, b, pad_id = pair
    dropped = a.package("bob", b"dropped by the relay")
    got = b.unpackage(a.package("bob", b"second").package)
    assert got.warnings[0].startswith(f"gap: {dropped.consumed} bytes")


def _forge_at(home_sender, pad_id: bytes, offset: int, message: bytes, original: bytes) -> bytes:
    """A correctly tagged package at any offset, made from a copy of the pad with the initiator's R."""
    segment = original[offset : offset + 16 + len(message)]
    return fmt.seal(fmt.Kind.TEXT, pad_id, offset, segment, message, original[:16])


@pytest.mark.parametrize("where", ["own-half", "straddles-split", "past-end", "huge-offset", "on-senders-r",
                                   "overlaps-senders-r", "ends-in-senders-r", "on-receivers-r"])
def test_segment_outside_the_peers_half_is_refused(tmp_path, where):
    home_a, home_b, pad_id = make_pair(tmp_path, size=4096)
    original = pad_bytes(home_b, pad_id)
    split = 2048
    offset = {"own-half": split + 100, "straddles-split": split - 20, "past-end": 4096 - 20,
              "huge-offset": 2**63, "on-senders-r": 0, "overlaps-senders-r": 15, "ends-in-senders-r": 0,
              "on-receivers-r": 4096 - 16 - 24}[where]
    if where in ("past-end", "huge-offset"):
        header = fmt.HEADER.pack(fmt.MAGIC, 1, pad_id, offset, 8)
        package = header + bytes(8) + bytes(16)
    else:
        package = _forge_at(home_a, pad_id, offset, b"" if where == "ends-in-senders-r" else b"12345678",
                            original)
    with Device.open(home_b) as b:
        b.store.close()
        state = receive_state(home_b)
    with Device.open(home_b) as b:
        # Bob is the responder: alice's half is [0, split); these lie elsewhere.
        with pytest.raises(OutOfRange):
            b.unpackage(package)
        assert event_names(b)[-1] == "out-of-range"
        b.store.close()
    assert receive_state(home_b) == state


def test_wrong_pad_id_truncated_and_garbage_are_refused(pair):
    a, b, pad_id = pair
    sent = a.package("bob", b"hello")
    other = bytearray(sent.package)
    other[5:21] = bytes(16)
    with pytest.raises(UnknownPad):
        b.unpackage(bytes(other))
    for cut in (0, 1, 4, 20, 33, 48, len(sent.package) - 1):
        with pytest.raises(MalformedPackage):
            b.unpackage(sent.package[:cut])
    with pytest.raises(MalformedPackage):
        b.unpackage(sent.package + b"\x00")
    for garbage in ("", "not base64 at all!", "T1RDMQ", "====", "\u00e9\u00e9\u00e9\u00e9", "QUJD\nREVG*"):
        with pytest.raises(MalformedPackage):
            b.unpackage_base64(garbage)
    assert b.unpackage_base64(fmt.encode(sent.package) + "\n").plaintext == b"hello"
    names = event_names(b)
    assert names.count("unknown-pad") == 1 and names.count("malformed") >= 14


def test_no_pad_bytes_or_plaintext_in_the_event_log_or_errors(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=8192)
    pad = pad_bytes(home_a, pad_id)
    secret = b"ATTACK AT DAWN 7f3a"
    errors: list[str] = []
    with Device.open(home_a) as a, Device.open(home_b) as b:
        msgs = [a.package("bob", secret + bytes([i])) for i in range(4)]
        b.unpackage(msgs[0].package)
        b.unpackage(msgs[2].package)  # a gap
        attempts = [msgs[0].package, msgs[1].package[:-1], b"OTC1" + bytes(60)]
        flipped = bytearray(msgs[3].package)
        flipped[-1] ^= 1
        attempts.append(bytes(flipped))
        forged = bytearray(msgs[1].package)
        forged[5] ^= 1
        attempts.append(bytes(forged))
        for attempt in attempts:
            with pytest.raises(PackageRefused) as info:
                b.unpackage(attempt)
            errors.append(str(info.value))
        with pytest.raises(PadExhausted) as info:
            a.package("bob", secret * 400)
        errors.append(str(info.value))
        declining = Device(a.store, confirm=_Decline())
        with pytest.raises(Declined) as info:
            declining.package("bob", secret)
        errors.append(str(info.value))
        logs = json.dumps(events(a) + events(b)) + "\n".join(errors)
    dumps = [sqlite3.connect(h / "device.db").execute("SELECT * FROM events").fetchall() for h in (home_a, home_b)]
    haystack = (logs + repr(dumps)).encode()
    assert secret not in haystack and secret.hex().encode() not in haystack
    assert base64.b64encode(secret)[:16] not in haystack
    for i in range(0, len(pad) - 8, 8):
        window = pad[i : i + 8]
        assert window not in haystack and window.hex().encode() not in haystack


class _Decline:
    def __init__(self) -> None:
        self.asked: list[ConfirmRequest] = []

    def ask(self, request: ConfirmRequest) -> bool:
        self.asked.append(request)
        return False


class _Approve(_Decline):
    def ask(self, request: ConfirmRequest) -> bool:
        self.asked.append(request)
        return True


def test_confirmation_sees_the_message_and_a_decline_consumes_nothing(pair):
    a, b, pad_id = pair
    approve = _Approve()
    Device(a.store, approve).package("bob", b"first")
    request = approve.asked[0]
    assert (request.contact, request.plaintext, request.consumes) == ("bob", b"first", 21)
    assert request.left_after == (1 << 15) - 16 - 21
    before = a.status()["contacts"][0]["send"]
    decline = _Decline()
    with pytest.raises(Declined):
        Device(a.store, decline).package("bob", b"no thanks")
    assert a.status()["contacts"][0]["send"] == before
    assert event_names(a)[-1] == "declined"


def test_unknown_contact(pair):
    a, b, pad_id = pair
    with pytest.raises(UnknownContact):
        a.package("carol", b"hi")
    with pytest.raises(UnknownContact):
        Device(a.store, _Approve()).package("carol", b"hi")


def test_exhaustion_warnings_at_10_and_1_percent_and_a_clear_refusal(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=20_000)  # 10,000 bytes per half, 9,984 after R
    with Device.open(home_a) as a, Device.open(home_b) as b:
        a.store.save_settings({ASK_MODE: "off"})  # no request for more pad at 10% and 1% (test_pad_lifecycle.py)
        lefts_with_warning = []
        for i in range(98):  # 100 pad bytes each: 9,800 used, 184 left
            sent = a.package("bob", bytes(84))
            b.unpackage(sent.package)
            if sent.warnings:
                assert sent.warnings[0].startswith("pad-low: ")
                lefts_with_warning.append(9_984 - 100 * (i + 1))
        # Warned from the first message that left under 10% (998.4 bytes), on.
        assert lefts_with_warning == list(range(984, 84, -100))
        low_events = [e for e in events(a) if e["event"] == "pad-low"]
        assert len(low_events) == 1  # 10% crossed; 1% not yet
        assert any("pad-low" in w for w in a.status()["warnings"])
        sent = a.package("bob", bytes(84 + 30))  # leaves 54 bytes: under 1%
        assert [e["event"] for e in events(a)].count("pad-low") == 2
        a.store.sync_wipes()  # the wipes' batched sync, then their bookkeeping, before the snapshot
        with a.store._transaction():
            pass
        state = receive_state(home_a)
        with pytest.raises(PadExhausted) as info:
            a.package("bob", bytes(39))  # needs 55 bytes, 54 left
        assert "needs 55 pad bytes" in str(info.value) and "54 are left" in str(info.value)
        assert event_names(a)[-1] == "pad-exhausted"
        a.store.close()
        assert receive_state(home_a) == state
    with Device.open(home_a) as a:
        last = a.package("bob", bytes(38))  # exactly fits
        assert last.offset + last.consumed == 10_000
        assert a.status()["contacts"][0]["send"]["left"] == 0
        assert any(w.startswith("pad-exhausted") for w in a.status()["warnings"])


def test_a_second_pad_takes_over_when_the_first_runs_out(tmp_path):
    home_a, home_b, first = make_pair(tmp_path, size=512)
    with PadStore(home_a) as sa, PadStore(home_b) as sb:
        second = pair_local(sa, sb, 4096)
    with Device.open(home_a) as a, Device.open(home_b) as b:
        sent = [a.package("bob", bytes(120)) for _ in range(4)]
        assert [s.pad_id for s in sent] == [first, second, second, second]  # 136 bytes each, 240 a half
        for s in sent:
            b.unpackage(s.package)
        assert len(a.status()["contacts"]) == 1


def test_contact_names_cannot_be_taken_by_another_device(tmp_path):
    make_pair(tmp_path, names=("alice", "bob"))
    impostor = tmp_path / "impostor"
    PadStore.init(impostor, "bob").close()
    with PadStore(tmp_path / "alice") as a, PadStore(impostor) as i:
        with pytest.raises(ContactExists):
            pair_local(a, i, 1024)
    assert not list((impostor / "pads").glob("*.pad"))


def test_pinned_randomness_gives_pinned_pads(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path / "one", random_bytes=Counter("pin"))
    home_c, home_d, pad_id2 = make_pair(tmp_path / "two", random_bytes=Counter("pin"))
    assert pad_id == pad_id2
    assert pad_bytes(home_a, pad_id) == pad_bytes(home_c, pad_id2)


def test_threads_get_disjoint_segments(pair):
    a, b, pad_id = pair
    results: list = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(25):
            message = f"{n}-{i}".encode()
            sent = a.package("bob", message)
            with lock:
                results.append((message, sent))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    segments = sorted((s.offset, s.offset + s.consumed) for _, s in results)
    assert len(segments) == 200
    assert all(prev[1] <= cur[0] for prev, cur in zip(segments, segments[1:]))
    for message, sent in results:
        assert b.unpackage(sent.package).plaintext == message


def test_interrupted_wipes_are_finished_by_the_next_store(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    with PadStore(home_a) as store:
        with store._transaction() as conn:
            store.add_consumed(conn, pad_id, 0, 64)
            conn.execute('INSERT INTO pending_wipe (pad_id, start, "end", owner) VALUES (?, 0, 64, ?)',
                         (pad_id, "00000000deadbeef"))
    assert pad_bytes(home_a, pad_id)[:64] != bytes(64)
    with PadStore(home_a) as store:
        assert store._read("SELECT count(*) FROM pending_wipe")[0][0] == 0
        assert [e["event"] for e in store.events()][-1] == "recovered"
    assert pad_bytes(home_a, pad_id)[:64] == bytes(64)


def test_a_live_stores_pending_wipes_are_left_to_it(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    with PadStore(home_a) as live:
        with live._transaction() as conn:
            live.add_consumed(conn, pad_id, 0, 64)
            live.add_pending_wipe(conn, pad_id, 0, 64)
        with PadStore(home_a) as other:
            assert other._read("SELECT count(*) FROM pending_wipe")[0][0] == 1
        assert pad_bytes(home_a, pad_id)[:64] != bytes(64)


# -- delivery receipts (kind 3) ------------------------------------------------------------

def test_receipt_names_the_package_it_confirms(pair):
    alice, bob, pad_id = pair
    sent = alice.package("bob", b"hello")
    received = bob.unpackage(bytes(sent.package))
    receipt = bob.receipt(received)
    assert fmt.parse(bytes(receipt.package)).kind == Kind.RECEIPT
    assert receipt.mailbox == bob.store.pads("alice")[0].mailbox_out
    opened = alice.unpackage(bytes(receipt.package)).to_json()
    assert opened["kind"] == "receipt" and opened["text"] is None
    assert opened["receipt_for"] == {"pad_id": pad_id.hex(), "offset": sent.offset}
    # 1 + 16 + 8 body bytes, plus the 16-byte tag mask: 41 pad bytes.
    assert receipt.consumed == 41


def test_receipt_body_known_answer_and_malformed():
    body = fmt.receipt_body(bytes(range(16)), 0x0102030405060708)
    assert body.hex() == "01" + bytes(range(16)).hex() + "0102030405060708"
    assert fmt.parse_receipt(body) == (bytes(range(16)), 0x0102030405060708)
    for bad in (body[:-1], b"\x02" + body[1:], b""):
        with pytest.raises(MalformedPackage):
            fmt.parse_receipt(bad)


def test_unreadable_receipt_is_a_warning(pair):
    alice, bob, _ = pair
    package = bob.package("alice", b"not a receipt", kind=Kind.RECEIPT).package
    opened = alice.unpackage(bytes(package)).to_json()
    assert "receipt_for" not in opened and opened["warnings"][0].startswith("bad-receipt")
