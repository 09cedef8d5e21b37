"""Moving the split (issue 23, docs/pad-lifecycle.md): two real devices in one process.

Every claim is checked by tests/lifecycle_checker.py, which reads the packages as bytes by DESIGN.md's table
and imports nothing of the project: no pad byte in two packages, whatever is lost, replayed or reordered.
"""

from __future__ import annotations

import json
import secrets
import struct
import threading

import pytest

from device.engine import ASK_MODE, GRANT_MODE, GRANT_SHARE, Device, grant_amount
from device.errors import NothingToGrant, PadExhausted, Replay
from onetimechat import package as fmt
from onetimechat.errors import PackageRefused
from tests import lifecycle_checker as checker
from tests.conftest import make_pair, otc, pad_bytes, receive_state

SIZE = 4096
HALF = SIZE // 2


def split_of(device: Device, pad_id: bytes) -> tuple[int, int]:
    """(split, split epoch) of the pad as ``device`` holds it."""
    pad = device.store.pad(pad_id)
    assert pad is not None
    return pad.split, pad.split_epoch


def talk_until_asking(a: Device, to: str, sent: list[bytes], size: int = 100):
    """``a`` sends messages of ``size`` bytes until its device asks for more pad; returns that request."""
    while True:
        made = a.package(to, b"x" * size)
        sent.append(bytes(made.package))
        if made.control:
            (request,) = made.control
            sent.append(bytes(request.package))
            return request


def send_until_exhausted(a: Device, to: str, sent: list[bytes], size: int = 100) -> int:
    n = 0
    while True:
        try:
            made = a.package(to, b"y" * size)
        except PadExhausted:
            return n
        sent.append(bytes(made.package))
        sent.extend(bytes(c.package) for c in made.control)
        n += 1


@pytest.fixture
def devices(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=SIZE)
    original = pad_bytes(home_a, pad_id)
    a, b = Device.open(home_a), Device.open(home_b)
    yield a, b, pad_id, original
    a.close()
    b.close()


def state(device: Device) -> dict:
    """A device's whole pad state but its event log (tables, pad files), and its split moves."""
    return {**receive_state(device.store.home),
            "moves": [{k: v for k, v in m.items() if k != "seen"} for m in device.store.split_moves(
                device.store.pads()[0].pad_id)]}


def test_a_grant_moves_the_split_and_both_agree(devices):
    a, b, pad_id, original = devices
    sent: list[bytes] = []
    request = talk_until_asking(a, "bob", sent)
    assert checker.control(request.package, original)[0] == "request"
    for package in sent[:-1]:
        b.unpackage(package)
    opened = b.unpackage(request.package)
    assert opened.control == "request" and opened.to_json()["control"]["type"] == "request"
    grant = b.answer_request(opened)
    assert grant is not None
    sent.append(bytes(grant.package))
    what, epoch, new_split = checker.control(grant.package, original)
    assert what == "grant" and epoch == 0 and new_split > HALF
    assert split_of(b, pad_id) == (new_split, 1)  # the owner of the bytes moved its own limit first
    assert split_of(a, pad_id) == (HALF, 0)  # nothing changes for alice until she opens the grant
    assert checker.segment(grant.package)[0] >= new_split  # the grant lies in what bob kept
    left_before = a.store.pad(pad_id).send_left
    applied = a.unpackage(grant.package)
    assert applied.control == "applied" and any(w.startswith("split-moved:") for w in applied.warnings)
    assert split_of(a, pad_id) == split_of(b, pad_id) == (new_split, 1)  # both agree
    assert a.store.pad(pad_id).send_left == left_before + (new_split - HALF)
    assert b.status()["contacts"][0]["granted_unseen"] == new_split - HALF
    # Alice goes on into the bytes bob gave; bob reads every one; bob talks until he runs out too.
    send_until_exhausted(a, "bob", sent)
    assert max(checker.segment(p)[1] for p in sent) > HALF  # she used the granted bytes
    for package in sent:
        if checker.segment(package)[0] < new_split:  # alice's, not yet opened
            try:
                b.unpackage(package)
            except Replay:
                pass  # opened above
    assert b.status()["contacts"][0]["granted_unseen"] == 0  # bob has seen alice use what he gave
    bob_sent: list[bytes] = []
    send_until_exhausted(b, "alice", bob_sent)
    for package in bob_sent:
        a.unpackage(package)
    checker.assert_no_byte_twice(sent + bob_sent, SIZE)


def test_the_grant_policy(devices):
    a, b, pad_id, original = devices
    request = fmt.PadRequest(wanted=1000, left=100)
    assert grant_amount("auto", 50, 1800, request) == 900  # half of what is unused, no more than asked for
    assert grant_amount("auto", 50, 1000, fmt.PadRequest(wanted=5000, left=100)) == 500
    assert grant_amount("auto", 50, 200, request) == 0  # not more than twice what the asker has
    assert grant_amount("off", 50, 1800, request) == 0
    assert grant_amount("ask", 50, 200, request) == 100  # the owner decides
    assert grant_amount("auto", 50, 100, fmt.PadRequest(wanted=50, left=0)) == 0  # under MIN_GRANT
    # Policy off: a request opens, nothing is given, bob's half stays whole.
    b.store.save_settings({GRANT_MODE: "off"})
    opened = b.unpackage(a.ask("bob", 1000).package)
    assert b.answer_request(opened) is None
    assert split_of(b, pad_id) == (HALF, 0)
    # Auto: nothing while alice has as much as bob; a share of bob's unused bytes once she is low.
    b.store.save_settings({GRANT_MODE: "auto", GRANT_SHARE: "10"})
    assert b.answer_request(b.unpackage(a.ask("bob", 1000).package)) is None
    for _ in range(8):  # bob sees alice use her half (what she says she has left is not enough by itself)
        b.unpackage(a.package("bob", b"z" * 200).package)
    grant = b.answer_request(b.unpackage(a.ask("bob", 1000).package))
    assert grant is not None
    a.unpackage(grant.package)
    spare = HALF - 16 - fmt.segment_length(fmt.CONTROL.size)  # bob's half less the grant's own package
    assert split_of(a, pad_id) == split_of(b, pad_id) == (HALF + spare // 10, 1)
    # A message or receipt is never answered with a grant.
    assert b.answer_request(b.unpackage(a.package("bob", b"hello").package)) is None


class Owner:
    """The owner at the device's screen, as a test plays it: says yes or no, and remembers what was shown."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.shown: list[str] = []

    def ask(self, request, timeout=None) -> bool:
        self.shown.append(request.plaintext.decode())
        return self.answer


@pytest.mark.parametrize("answer", [True, False])
def test_ask_mode_asks_the_owner_on_the_screen(tmp_path, answer):
    home_a, home_b, pad_id = make_pair(tmp_path, size=SIZE)
    owner = Owner(answer)
    with Device.open(home_a) as a, Device(Device.open(home_b).store, owner) as b:
        b.store.save_settings({GRANT_MODE: "ask"})
        grant = b.answer_request(b.unpackage(a.ask("bob", 500).package))
        assert len(owner.shown) == 1 and "asks for 500 bytes" in owner.shown[0]
        if answer:
            assert grant is not None and a.unpackage(grant.package).control == "applied"
            assert split_of(a, pad_id) == split_of(b, pad_id) == (HALF + 500, 1)
        else:
            assert grant is None and split_of(b, pad_id) == (HALF, 0)  # a declined grant gives nothing


def test_a_grant_lost_by_the_relay_is_not_applied_and_its_bytes_go_to_nobody(devices):
    a, b, pad_id, original = devices
    sent: list[bytes] = []
    request = talk_until_asking(a, "bob", sent)
    for package in sent[:-1]:
        b.unpackage(package)
    lost = b.answer_request(b.unpackage(request.package))  # the relay drops it
    assert lost is not None
    _, _, lost_split = checker.control(lost.package, original)
    # Bob's status says the bytes are given and unused; alice's split never moved.
    status = b.status()
    assert status["contacts"][0]["granted_unseen"] == lost_split - HALF
    assert any(w.startswith("grant-unseen:") for w in status["warnings"])
    assert split_of(a, pad_id) == (HALF, 0)
    send_until_exhausted(a, "bob", sent)
    bob_sent: list[bytes] = [bytes(lost.package)]
    send_until_exhausted(b, "alice", bob_sent)
    assert max(checker.segment(p)[1] for p in sent) <= HALF  # alice stays in her half
    assert min(checker.segment(p)[0] for p in bob_sent) >= lost_split  # bob never takes back what he gave
    checker.assert_no_byte_twice(sent + bob_sent, SIZE)


def test_a_later_grant_applies_after_a_lost_one(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=SIZE)
    with Device.open(home_a) as a, Device.open(home_b) as b:
        b.grant(pad_id, 200)  # lost
        second, given = b.grant(pad_id, 300)
        assert given == 300 and split_of(b, pad_id) == (HALF + 500, 2)
        assert a.unpackage(second.package).control == "applied"
        assert split_of(a, pad_id) == (HALF + 500, 2)  # the bytes of both, the epochs in step again
        third, _ = b.grant(pad_id, 100)
        assert a.unpackage(third.package).control == "applied"
        assert split_of(a, pad_id) == split_of(b, pad_id) == (HALF + 600, 3)


def test_a_replayed_grant_is_refused_and_changes_nothing(devices):
    a, b, pad_id, original = devices
    grant, _ = b.grant(pad_id, 300)
    a.unpackage(grant.package)
    before_a, before_b = state(a), state(b)
    with pytest.raises(Replay):
        a.unpackage(grant.package)
    assert state(a) == before_a and state(b) == before_b


def test_a_forged_grant_is_refused_and_changes_nothing(devices):
    """The relay (or a hostile laptop) forges grants: it knows the format and every public field, not the pad."""
    a, b, pad_id, original = devices
    grant, _ = b.grant(pad_id, 300)
    genuine = bytes(grant.package)
    before = state(a)
    header = struct.Struct(">4sB16sQI")
    forgeries = []
    # Every single bit of a genuine grant flipped (the split field is in the ciphertext: XOR is malleable, the
    # tag is not).
    for bit in range(len(genuine) * 8):
        flipped = bytearray(genuine)
        flipped[bit // 8] ^= 1 << (bit % 8)
        forgeries.append(bytes(flipped))
    # The forger's own grants, naming each unused offset of bob's half around the real one, with random bytes.
    start, _ = checker.segment(genuine)
    for offset in range(start - 40 * 34, start, 34):
        body = secrets.token_bytes(fmt.CONTROL.size)
        forgeries.append(header.pack(b"OTC2", 4, pad_id, offset, len(body)) + body + secrets.token_bytes(16))
    codes = set()
    for forged in forgeries:
        with pytest.raises(PackageRefused) as refused:
            a.unpackage(forged)
        codes.add(refused.value.code)
    assert codes <= {"invalid", "malformed", "out-of-range", "unknown-pad"}
    assert "invalid" in codes
    after = state(a)
    assert after == before  # not a byte of state moved, the split least of all
    assert split_of(a, pad_id) == (HALF, 0)
    a.flush_refusals()  # refusals beyond the log budget are counted, and written within a minute
    assert a.status()["contacts"][0]["forgery_alarm"]  # someone is forging: the owner is told
    assert a.unpackage(genuine).control == "applied"  # the genuine grant still opens


def test_a_reordered_grant_is_refused_and_changes_nothing(devices):
    a, b, pad_id, original = devices
    first, _ = b.grant(pad_id, 200)
    second, _ = b.grant(pad_id, 300)
    assert a.unpackage(second.package).control == "applied"
    assert split_of(a, pad_id) == (HALF + 500, 2)
    moved = a.store.pad(pad_id)
    late = a.unpackage(first.package)  # delivered after the later one
    assert late.control == "refused" and any(w.startswith("grant-refused:") for w in late.warnings)
    now = a.store.pad(pad_id)
    assert (now.split, now.split_epoch, now.send_left, now.send_next) == (
        moved.split, moved.split_epoch, moved.send_left, moved.send_next)
    assert [e["event"] for e in a.store.events(3)][-1] == "grant-refused"


def test_crossing_grants_are_both_refused_and_no_byte_is_in_both_halves(devices):
    """Both devices give at once (each asked by the other, say): neither grant may apply over the other."""
    a, b, pad_id, original = devices
    from_alice, _ = a.grant(pad_id, 300)
    from_bob, _ = b.grant(pad_id, 200)
    assert split_of(a, pad_id) == (HALF - 300, 1) and split_of(b, pad_id) == (HALF + 200, 1)
    assert b.unpackage(from_alice.package).control == "refused"
    assert a.unpackage(from_bob.package).control == "refused"
    alice_split, bob_split = split_of(a, pad_id)[0], split_of(b, pad_id)[0]
    assert alice_split <= bob_split  # 500 bytes between them belong to nobody
    # The next grant applies again (its epoch is not behind), and both halves stay apart.
    again, _ = b.grant(pad_id, 100)
    assert a.unpackage(again.package).control == "applied"
    assert split_of(a, pad_id)[0] == split_of(b, pad_id)[0] == HALF + 300
    sent = [bytes(p.package) for p in (from_alice, from_bob, again)]
    send_until_exhausted(a, "bob", sent)
    send_until_exhausted(b, "alice", sent)
    checker.assert_no_byte_twice(sent, SIZE)


def test_a_grant_cannot_take_back_or_give_used_bytes(tmp_path):
    """A grant naming a split against the receiver, or onto bytes the receiver has seen used, moves nothing
    (only a faulty peer device could make one: the relay cannot forge any)."""
    home_a, home_b, pad_id = make_pair(tmp_path, size=SIZE)
    with Device.open(home_a) as a, Device.open(home_b) as b:
        original = pad_bytes(home_a, pad_id)
        seen = b.package("alice", b"m" * 100)  # bob's, near the top of the pad
        a.unpackage(seen.package)
        # Bob's device sealing bodies a correct one never would (the engine's own sealing, a faulty policy):
        for body in (fmt.grant_body(0, HALF - 10),  # takes bytes back from alice
                     fmt.grant_body(0, SIZE - 16 - 50),  # gives bytes bob already sent
                     fmt.grant_body(0, SIZE)):  # past bob's authentication key
            _, package = b.store.send(
                "alice", len(body),
                lambda r, segment, key, body=body: fmt.seal(4, r.pad.pad_id, r.start, segment, body, key))
            assert a.unpackage(package).control == "refused"
            assert split_of(a, pad_id) == (HALF, 0)
        assert checker.control(package, original)[0] == "grant"


def test_nothing_to_grant(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=SIZE)
    with Device.open(home_b) as b:
        with pytest.raises(NothingToGrant):
            b.grant(pad_id, 63)  # under MIN_GRANT: not worth a package
        send_until_exhausted(b, "alice", [])
        before = b.store.pad(pad_id)
        with pytest.raises(NothingToGrant):
            b.grant(pad_id, 1000)
        assert b.store.pad(pad_id) == before  # a refused grant reserves nothing


def both_talk(talkers: list[threading.Thread], readers: list[threading.Thread], stop: threading.Event,
              timeout: float = 300) -> None:
    """Run the talkers and readers together; once the talkers are done, ``stop`` the readers (bounded)."""
    for t in talkers + readers:
        t.start()
    for t in talkers:
        t.join(timeout=timeout)
    stop.set()
    for t in readers:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in talkers + readers)


def test_concurrent_sends_while_requests_and_grants_are_in_flight_never_share_a_byte(tmp_path):
    """Both owners talk at once, each device in two threads (sending, and opening what arrives); a relay written
    here delivers every package in a random order, late, some never; devices ask and grant by themselves, both
    ways. Over every package produced, the outside checker finds no pad byte used twice."""
    size = 32768
    home_a, home_b, pad_id = make_pair(tmp_path, size=size)
    original = pad_bytes(home_a, pad_id)
    produced: list[bytes] = []
    produced_lock = threading.Lock()
    inbox: dict[str, list[bytes]] = {"alice": [], "bob": []}
    inbox_lock = threading.Lock()
    devices = {"alice": Device.open(home_a), "bob": Device.open(home_b)}
    outcomes: list[str] = []
    stop = threading.Event()
    phase = threading.Barrier(2, timeout=120)

    def post(to: str, package: bytes) -> None:
        with produced_lock:
            produced.append(package)
        if secrets.randbelow(20) == 0 and checker.kind(package) != 4:
            return  # the relay drops one message in twenty (a lost grant: its own test below)
        with inbox_lock:
            inbox[to].append(package)

    def talker(me: str, peer: str, phases: list[int]) -> None:
        device = devices[me]
        for rate in phases:  # bytes per message in each phase: the talkative side changes half way
            sent, tries = 0, 0
            while sent < 60 and tries < 400:
                tries += 1
                try:
                    made = device.package(peer, secrets.token_bytes(rate + secrets.randbelow(rate)))
                except PadExhausted:
                    stop.wait(0.005)  # a grant may be on its way
                    continue
                sent += 1
                post(peer, bytes(made.package))
                for control in made.control:
                    post(peer, bytes(control.package))
                stop.wait(0.001)
            phase.wait()

    def reader(me: str, peer: str) -> None:
        device = devices[me]
        while not stop.is_set() or inbox[me]:
            with inbox_lock:
                item = inbox[me].pop(secrets.randbelow(len(inbox[me]))) if inbox[me] else None
            if item is None:
                stop.wait(0.001)
                continue
            opened = device.unpackage(item)
            if opened.control:
                outcomes.append(opened.control)
            grant = device.answer_request(opened)
            if grant is not None:
                post(peer, bytes(grant.package))

    both_talk([threading.Thread(target=talker, args=("alice", "bob", [200, 10])),
               threading.Thread(target=talker, args=("bob", "alice", [10, 200]))],
              [threading.Thread(target=reader, args=("alice", "bob")),
               threading.Thread(target=reader, args=("bob", "alice"))], stop)
    reader("alice", "bob")  # what is still on its way arrives
    reader("bob", "alice")
    reader("alice", "bob")
    try:
        segments = checker.assert_no_byte_twice(produced, size)
        assert len(segments) == len(produced)
        alice_split, bob_split = (devices[n].store.pad(pad_id).split for n in ("alice", "bob"))
        assert alice_split <= bob_split
        assert "applied" in outcomes  # the split did move while both talked
        alice_sent = [checker.segment(p) for p in produced if checker.segment(p)[0] < alice_split]
        assert max(end for _, end in alice_sent) > size // 2  # and alice sent with what bob gave
        kinds = {checker.control(p, original)[0] for p in produced if checker.kind(p) == 4}
        assert kinds == {"grant", "request"}
    finally:
        for device in devices.values():
            device.close()


def test_ask_mode_setting_off_makes_no_requests(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=SIZE)
    with Device.open(home_a) as a:
        a.store.save_settings({ASK_MODE: "off"})
        sent: list[bytes] = []
        send_until_exhausted(a, "bob", sent)
        assert all(checker.kind(p) == 1 for p in sent)


def test_the_owner_asks_and_grants_from_the_device_shell(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path, size=SIZE)
    request = otc("device", "ask", "--home", str(home_a), "bob", "--bytes", "500", check=True).stdout
    opened = json.loads(otc("device", "unpackage", "--home", str(home_b), input=request, check=True).stdout)
    assert opened["kind"] == "control" and opened["control"] == {"type": "request", "wanted": 500,
                                                                  "left": HALF - 16 - 34, "outcome": "request"}
    assert "grant" not in opened  # alice is not low: bob's device gives nothing by itself
    given = otc("device", "grant", "--home", str(home_b), "alice", "700", check=True)
    assert b"Gave alice 700 bytes" in given.stderr
    status = json.loads(otc("device", "status", "--home", str(home_b), "--json", check=True).stdout)
    assert status["contacts"][0]["granted_unseen"] == 700
    assert b"700 bytes given to alice are not in use yet" in otc("device", "status", "--home", str(home_b)).stdout
    applied = json.loads(otc("device", "unpackage", "--home", str(home_a), input=given.stdout, check=True).stdout)
    assert applied["control"]["type"] == "grant" and applied["control"]["outcome"] == "applied"
    status = json.loads(otc("device", "status", "--home", str(home_a), "--json", check=True).stdout)
    assert status["contacts"][0]["pads"][0]["split"] == HALF + 700
    # The policy is the owner's setting, on the device.
    assert b"grants: auto, up to 50%" in otc("device", "grants", "--home", str(home_b), check=True).stdout
    assert b"grants: ask, up to 20%" in otc("device", "grants", "--home", str(home_b), "--mode", "ask",
                                            "--share", "20", check=True).stdout
    for args, needle in ((["grants", "--share", "0"], b"percent from 1 to 100"),
                         (["grant", "carol", "100"], b"No contact named 'carol'"),
                         (["grant", "alice", "10"], b"no unused pad to give alice")):
        bad = otc("device", args[0], "--home", str(home_b), *args[1:])
        assert bad.returncode != 0 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
