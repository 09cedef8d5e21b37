"""A hostile relay against package v2: the forgery that broke v1, and the rules that keep R apart.

The forger here is written in the test from DESIGN.md's byte layout (``struct``
and ``cryptography``'s Poly1305), not from ``onetimechat.package``: it is what a
relay that holds back one message of known text can compute.

The v1 attack (issue 16): in v1 the MAC key was the first 32 bytes of the segment
the package itself names, and a receiver accepts any unused offset. From one
held-back message whose text it knows, the relay knows that message's
keystream, names a segment inside it, and both the "MAC key" and its forgery's
keystream are known bytes. In v2 the tag's polynomial key R is never keystream,
so knowing keystream gives the forger nothing but the mask s.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import struct
from contextlib import contextmanager

import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.engine import ASK_MODE, Device
from device.errors import PadExhausted, RetiredPad
from device.localpair import pair_local
from device.storage.padstore import PadStore
from onetimechat.errors import InvalidPackage, WithdrawnFormat
from tests.conftest import make_pair, otc, pad_bytes, receive_state
from tests.rpc_fixtures import RpcDevice, ScriptedSource, start_server

HEADER = struct.Struct(">4sB16sQI")  # magic, kind, pad_id, offset, length (DESIGN.md)
KNOWN_TEXT = (b"Hi Bob, it's Alice. Meet at the usual cafe at noon tomorrow; "
              b"bring the documents we talked about.")[:100].ljust(100, b".")
FORGED_TEXT = b"Plans changed: go to the north gate"


# -- the forger: independent of the device's code ------------------------------------------------


def forger_parse(package: bytes) -> tuple[bytes, int, bytes]:
    """(pad_id, offset, ciphertext) read off a package the relay holds."""
    magic, _kind, pad_id, offset, length = HEADER.unpack_from(package, 0)
    assert magic == b"OTC2"
    return pad_id, offset, package[HEADER.size : HEADER.size + length]


def forge(magic: bytes, pad_id: bytes, offset: int, text: bytes, keystream: bytes, mac_key: bytes) -> bytes:
    header = HEADER.pack(magic, 1, pad_id, offset, len(text))
    body = header + bytes(a ^ b for a, b in zip(text, keystream))
    mac = Poly1305(mac_key)
    mac.update(body)
    return body + mac.finalize()


def forgeries(held: bytes, known_text: bytes, text: bytes) -> list[tuple[str, bytes]]:
    """Every forgery the relay can build from one held-back package of known text."""
    pad_id, offset, ciphertext = forger_parse(held)
    keystream = bytes(a ^ b for a, b in zip(ciphertext, known_text))
    start = offset + 16  # the package's keystream is pad[offset+16 : offset+16+L]
    known = {start + i: keystream[i] for i in range(len(keystream))}

    def known_bytes(at: int, n: int) -> bytes:
        return bytes(known[at + i] for i in range(n))

    out = []
    # The v1 construction, at every shift inside the known keystream: key = pad[o : o+32],
    # keystream = pad[o+32 : ...]. As OTC1, and dressed as OTC2.
    for o in range(start, start + len(keystream) - 32 - len(text) + 1):
        mac_key, stream = known_bytes(o, 32), known_bytes(o + 32, len(text))
        out.append(("v1", forge(b"OTC1", pad_id, o, text, stream, mac_key)))
        out.append(("v1-as-v2", forge(b"OTC2", pad_id, o, text, stream, mac_key)))
    # v2 at every shift: the mask s and the keystream are known; R must be guessed. The guesses a
    # forger has: zeros, ones, and every 16-byte run of the keystream it knows.
    guesses = [bytes(16), b"\xff" * 16] + [known_bytes(at, 16) for at in range(start, start + len(keystream) - 15)]
    for o in range(start, start + len(keystream) - 16 - len(text) + 1):
        mask, stream = known_bytes(o, 16), known_bytes(o + 16, len(text))
        for r_guess in guesses:
            out.append(("v2", forge(b"OTC2", pad_id, o, text, stream, r_guess + mask)))
    return out


# -- the attack, replayed ------------------------------------------------------------------------


def test_a_relay_holding_back_a_known_message_cannot_forge(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=1 << 16)
    with Device.open(home_a) as alice:
        held = bytes(alice.package("bob", KNOWN_TEXT).package)  # the relay keeps it from bob
    assert len(held) == 149
    attempts = forgeries(held, KNOWN_TEXT, FORGED_TEXT)
    kinds = {k for k, _ in attempts}
    assert kinds == {"v1", "v1-as-v2", "v2"}
    assert len(attempts) > 4000
    before = receive_state(home_b)

    with Device.open(home_b) as bob:
        for kind, forged in attempts:
            expected = WithdrawnFormat if kind == "v1" else InvalidPackage
            with pytest.raises(expected) as info:
                bob.unpackage(forged)
            assert FORGED_TEXT.decode() not in str(info.value)
        bob.store.close()
    assert receive_state(home_b) == before  # no consumed range, no frontier, no pad byte changed

    # The same through `otc device unpackage`, as the review did: refused, no plaintext printed.
    by_cli = attempts[:2] + attempts[-2:]
    for _, forged in by_cli:
        result = otc("device", "unpackage", "--home", str(home_b), input=base64.b64encode(forged))
        assert result.returncode != 0 and result.stdout == b""
        assert b"Traceback" not in result.stderr and FORGED_TEXT not in result.stderr
    assert receive_state(home_b) == before

    # The held-back genuine message still opens, with no gap and no replay.
    with Device.open(home_b) as bob:
        got = bob.unpackage(held)
        assert got.plaintext == KNOWN_TEXT and got.warnings == []
        status = bob.status()
    contact = status["contacts"][0]
    n_v2 = sum(1 for k, _ in attempts + by_cli if k != "v1")  # OTC1 is refused before any tag is read
    assert contact["forgery_alarm"] is True and contact["tag_failures"] == n_v2
    assert status["alarms"] and status["alarms"][0].startswith("forgery-alarm:")
    assert status["warnings"][0] == status["alarms"][0]

    # The alarm survives a restart and shows in `otc device status` and its --json.
    shown = json.loads(otc("device", "status", "--home", str(home_b), "--json", check=True).stdout)
    assert shown["contacts"][0]["forgery_alarm"] is True and shown["alarms"]
    text = otc("device", "status", "--home", str(home_b), check=True).stdout.decode()
    assert "FORGERY ALARM" in text and "someone is forging" in text
    log = otc("device", "log", "--home", str(home_b), "--json", check=True).stdout.decode().splitlines()
    assert any(json.loads(line)["event"] == "forgery-alarm" for line in log)


def test_the_alarm_starts_at_the_third_tag_failure(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=4096)
    with Device.open(home_a) as alice:
        genuine = bytes(alice.package("bob", b"genuine").package)
    with Device.open(home_b) as bob:
        for n in (1, 2, 3):
            bad = bytearray(genuine)
            bad[-1] ^= n
            with pytest.raises(InvalidPackage):
                bob.unpackage(bytes(bad))
            status = bob.status()
            assert status["contacts"][0]["tag_failures"] == n
            assert bool(status["alarms"]) is (n >= 3)
        assert bob.unpackage(genuine).plaintext == b"genuine"


def test_a_peer_cannot_use_the_receivers_own_r_either(tmp_path):
    """R is per direction: bob's R (pad[N-16:N]) never authenticates a package in alice's half."""
    home_a, home_b, pad_id = make_pair(tmp_path, size=4096)
    pad = pad_bytes(home_b, pad_id)
    offset, text = 100, b"signed with the wrong R"
    stream = pad[offset + 16 : offset + 16 + len(text)]
    wrong_r = forge(b"OTC2", pad_id, offset, text, stream, pad[-16:] + pad[offset : offset + 16])
    right_r = forge(b"OTC2", pad_id, offset, text, stream, pad[:16] + pad[offset : offset + 16])
    with Device.open(home_b) as bob:
        with pytest.raises(InvalidPackage):
            bob.unpackage(wrong_r)
        assert bob.unpackage(right_r).plaintext == text  # the construction itself is DESIGN.md's


# -- R is never spent ----------------------------------------------------------------------------


def _segment(package: bytes) -> tuple[int, int]:
    _, _, _, offset, length = HEADER.unpack_from(package, 0)
    return offset, offset + 16 + length


def _exchange(home_a, home_b, pad_id, size: int, plan: list[tuple[bool, int]], deliver_order: list[int]) -> None:
    """Send per ``plan`` ((alice sends?, length)), deliver in ``deliver_order``, check every rule on R."""
    before_a, before_b = pad_bytes(home_a, pad_id), pad_bytes(home_b, pad_id)
    assert before_a == before_b
    r_init, r_resp = before_a[:16], before_a[-16:]
    split = size // 2
    sent: list[tuple[bool, bytes, bytes]] = []
    with Device.open(home_a) as alice, Device.open(home_b) as bob:
        for device in (alice, bob):  # every byte planned: no request for more pad at 10% and 1% (pad-lifecycle.md)
            device.store.save_settings({ASK_MODE: "off"})
        for from_alice, length in plan:
            text = bytes([len(sent) % 251]) * length
            device, peer = (alice, "bob") if from_alice else (bob, "alice")
            sent.append((from_alice, text, bytes(device.package(peer, text).package)))
        for i in deliver_order:
            from_alice, text, package = sent[i]
            start, end = _segment(package)
            # Never touching either R, always inside the sender's own half.
            assert 16 <= start and end <= size - 16
            assert (end <= split) if from_alice else (start >= split)
            got = (bob if from_alice else alice).unpackage(package)
            assert got.plaintext == text
            receipt = bytes((bob if from_alice else alice).receipt(got).package)  # kind 3 spends pad too
            r_start, r_end = _segment(receipt)
            assert 16 <= r_start and r_end <= size - 16
            (alice if from_alice else bob).unpackage(receipt)
    after_a, after_b = pad_bytes(home_a, pad_id), pad_bytes(home_b, pad_id)
    for after in (after_a, after_b):
        assert after[:16] == r_init and after[-16:] == r_resp  # each R reads back unchanged


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_segment_ever_touches_an_r(tmp_path_factory, data):
    size = data.draw(st.sampled_from([256, 1000, 4096, 65_536]))
    home_a, home_b, pad_id = make_pair(tmp_path_factory.mktemp("r"), size=size)
    budget = {True: size // 2 - 16, False: size - size // 2 - 16}
    plan = []
    for _ in range(data.draw(st.integers(1, 24))):
        from_alice = data.draw(st.booleans())
        length = data.draw(st.integers(0, 300))
        # Room for the message and its receipt (41 pad bytes) on the other side.
        if budget[from_alice] >= 16 + length and budget[not from_alice] >= 41:
            budget[from_alice] -= 16 + length
            budget[not from_alice] -= 41
            plan.append((from_alice, length))
    order = data.draw(st.permutations(range(len(plan))))
    _exchange(home_a, home_b, pad_id, size, plan, list(order))


def test_r_survives_thousands_of_messages_both_ways(tmp_path):
    size = 1 << 20
    home_a, home_b, pad_id = make_pair(tmp_path, size=size)
    plan = [(i % 3 != 0, (i * 37) % 200) for i in range(2000)]
    # Delivered out of order in blocks (a relay reorders), every message once.
    order = [j for block in range(0, 2000, 10) for j in reversed(range(block, block + 10))]
    _exchange(home_a, home_b, pad_id, size, plan, order)


def test_up_to_the_last_byte_before_r(tmp_path):
    """Each half can be spent to its very end, and not one byte further."""
    size = 1024
    home_a, home_b, pad_id = make_pair(tmp_path, size=size)
    with Device.open(home_a) as alice, Device.open(home_b) as bob:
        whole_low = alice.package("bob", bytes(512 - 16 - 16))  # [16, 512)
        whole_high = bob.package("alice", bytes(512 - 16 - 16))  # [512, 1008)
        assert _segment(bytes(whole_low.package)) == (16, 512)
        assert _segment(bytes(whole_high.package)) == (512, size - 16)
        with pytest.raises(PadExhausted):
            alice.package("bob", b"")
        assert bob.unpackage(whole_low.package).plaintext == bytes(480)
        assert alice.unpackage(whole_high.package).plaintext == bytes(480)
    pad = pad_bytes(home_a, pad_id)
    assert pad[16:-16] == bytes(size - 32) and pad[:16] != bytes(16) and pad[-16:] != bytes(16)


# -- the figures -----------------------------------------------------------------------


def test_four_mib_pad_after_one_100_byte_message(tmp_path):
    a, b = tmp_path / "alice", tmp_path / "bob"
    otc("device", "init", "--home", str(a), "--name", "alice", check=True)
    otc("device", "init", "--home", str(b), "--name", "bob", check=True)
    otc("pad", "pair-local", "--size", "4M", str(a), str(b), check=True)
    wire = otc("device", "package", "--home", str(a), "bob", input=bytes(100), check=True).stdout
    assert len(base64.b64decode(wire.strip(), validate=True)) == 149
    status = json.loads(otc("device", "status", "--home", str(a), "--json", check=True).stdout)
    assert status["contacts"][0]["send"]["left"] == 2_097_152 - 16 - 116 == 2_097_020
    text = otc("device", "status", "--home", str(a), check=True).stdout.decode()
    assert "2097020 left" in text


@contextmanager
def served(home, tmp_path):
    """The device at ``home`` serving its RPC, with a laptop paired: (server, client)."""
    source = ScriptedSource()
    server = start_server(home, source)
    try:
        yield server, RpcDevice(home, home, b"", source, server, tmp_path).pair_client()
    finally:
        server.close()


# -- pads made before v2 -------------------------------------------------------------------------


def _as_made_before_v2(home) -> None:
    """Turn a home back into schema 3 (package v1's), exactly as such a home looks on disk."""
    conn = sqlite3.connect(home / "device.db")
    try:
        conn.executescript("ALTER TABLE pads DROP COLUMN peer_epoch;"  # step 11
                           "DROP TABLE split_moves; ALTER TABLE pads DROP COLUMN split_epoch;"  # step 10
                           "DROP TABLE abe_pads;"  # step 9
                           "DROP TABLE abe_periods; ALTER TABLE abe_keys DROP COLUMN period;"  # step 8
                           "ALTER TABLE abe_keys DROP COLUMN starts; ALTER TABLE abe_keys DROP COLUMN ends;"
                           "ALTER TABLE abe_issued DROP COLUMN period; ALTER TABLE abe_issued DROP COLUMN starts;"
                           "ALTER TABLE abe_issued DROP COLUMN ends; ALTER TABLE abe_issued DROP COLUMN revoked;"
                           "ALTER TABLE device DROP COLUMN identity; ALTER TABLE contacts DROP COLUMN peer_identity;"
                           "ALTER TABLE abe_authorities DROP COLUMN device_identity;"  # step 7
                           "ALTER TABLE abe_issued DROP COLUMN proof_key;"  # step 6
                           "ALTER TABLE pads DROP COLUMN confirmed; ALTER TABLE pads DROP COLUMN fingerprint;"  # 5
                           "ALTER TABLE abe_keys DROP COLUMN confirmed; ALTER TABLE abe_keys DROP COLUMN fingerprint;"
                           "ALTER TABLE abe_issued DROP COLUMN confirmed;"
                           "ALTER TABLE abe_issued DROP COLUMN fingerprint;"
                           "DROP TABLE tag_failures; ALTER TABLE pads DROP COLUMN format; PRAGMA user_version = 3;")
    finally:
        conn.close()


def test_pads_made_before_v2_are_retired_and_destroyed(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=4096)
    for home in (home_a, home_b):
        _as_made_before_v2(home)
    pad_file = home_b / "pads" / f"{pad_id.hex()}.pad"
    assert pad_file.stat().st_size == 4096

    with Device.open(home_b) as bob:  # the upgrade retires the pad and destroys its bytes
        assert not pad_file.exists()
        assert [e["event"] for e in bob.store.events()][-1] == "pad-retired"
        with pytest.raises(RetiredPad) as info:
            bob.package("alice", b"hello")
        assert "pair with alice again" in str(info.value)
        status = bob.status()
        assert status["contacts"][0]["must_pair_again"] is True
        assert status["contacts"][0]["send"]["left"] == 0
        assert any(w.startswith("retired-pad:") for w in status["warnings"])
        v2_on_old_pad = forge(b"OTC2", pad_id, 100, b"hi", b"\0\0", bytes(32))
        with pytest.raises(RetiredPad):
            bob.unpackage(v2_on_old_pad)
        with pytest.raises(WithdrawnFormat):
            bob.unpackage(b"OTC1" + v2_on_old_pad[4:])

    text = otc("device", "status", "--home", str(home_b), check=True).stdout.decode()
    assert "pad retired" in text and "pair with this contact again" in text
    refused = otc("device", "package", "--home", str(home_b), "alice", input=b"hi")
    assert refused.returncode == 1 and refused.stderr.decode().count("\n") == 1
    assert "pair with alice again" in refused.stderr.decode()

    # The device's RPC says so to the laptop (the chat's `contacts`); pairing again mends it.
    with served(home_b, tmp_path) as (_, client):
        assert client.call("contacts")[0]["must_pair_again"] is True
        with PadStore(home_a) as a, PadStore(home_b) as b:
            new_pad = pair_local(a, b, 4096)
        contact = client.call("contacts")[0]
        assert contact["must_pair_again"] is False and contact["send_left"] == 2048 - 16
    with Device.open(home_a) as alice, Device.open(home_b) as bob:
        sent = alice.package("bob", b"on the new pad")
        assert sent.pad_id == new_pad
        assert bob.unpackage(sent.package).plaintext == b"on the new pad"


def test_opening_an_old_home_from_several_processes_at_once(tmp_path):
    """Two commands upgrading the same pre-v2 home race to destroy its pad: neither fails."""
    import threading

    home_a, home_b, pad_id = make_pair(tmp_path, size=1 << 20)
    _as_made_before_v2(home_b)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        start.wait()
        try:
            PadStore(home_b).close()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert not (home_b / "pads" / f"{pad_id.hex()}.pad").exists()


def test_the_alarm_is_per_pad_on_every_surface(tmp_path):
    """Two pads for one contact, two failures on each: no alarm anywhere; a third on one: the alarm everywhere."""
    home_a, home_b, first = make_pair(tmp_path, size=4096)
    with PadStore(home_a) as a, PadStore(home_b) as b:
        second = pair_local(a, b, 4096)
    pad = {first: pad_bytes(home_b, first), second: pad_bytes(home_b, second)}

    def attempt(bob, pad_id: bytes, n: int) -> None:
        forged = forge(b"OTC2", pad_id, 100 + n, b"x", b"\0", bytes(16) + pad[pad_id][100 + n : 116 + n])
        with pytest.raises(InvalidPackage):
            bob.unpackage(forged)

    with served(home_b, tmp_path) as (server, client):
        service = server.app.extensions["otc"]
        for n in range(2):
            attempt(service.device, first, n)
            attempt(service.device, second, n)
        status = service.device.status()
        assert status["contacts"][0]["tag_failures"] == 4
        assert not status["alarms"] and not status["contacts"][0]["forgery_alarm"]
        assert client.call("contacts")[0]["forgery_alarm"] is False
        assert all(note == "" for note in (c.note for c in service.panel_status()[0]))
        attempt(service.device, second, 2)
        status = service.device.status()
        assert status["alarms"] and status["contacts"][0]["forgery_alarm"]
        assert client.call("contacts")[0]["forgery_alarm"] is True
        assert service.panel_status()[0][0].note.startswith("Forgery alarm")
        assert [e["event"] for e in service.device.store.events()].count("forgery-alarm") == 1


def test_a_truncated_v1_package_is_still_refused_as_v1(pair):
    with pytest.raises(WithdrawnFormat):
        pair[1].unpackage(b"OTC1")
    with pytest.raises(WithdrawnFormat):
        pair[1].unpackage(b"OTC1" + bytes(20))


def test_a_pad_too_small_for_both_keys_is_refused_by_the_store(tmp_path):
    from device.errors import StoreError

    PadStore.init(tmp_path / "a", "alice").close()
    with PadStore(tmp_path / "a") as store:
        pad_id = bytes(range(16))
        store.pad_path(pad_id).write_bytes(bytes(24))
        with pytest.raises(StoreError):
            store.add_pad(contact="bob", peer_device_id=bytes(16), pad_id=pad_id, role="initiator", size=24,
                          mailbox_out=bytes(16), mailbox_in=bytes(16))
