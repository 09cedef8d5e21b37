"""Moving the split under attack: the outside review's findings (docs/pad-lifecycle.md, "What each attack gets").

The attacker is a malicious peer device (it holds the whole pad, so it can seal any package on its half with the
right tag), a hostile relay, or a hostile laptop. Its packages are sealed by tests/lifecycle_checker.py from
DESIGN.md's table alone; the devices are the project's real ones, in process or behind their RPC servers.
"""

from __future__ import annotations

import secrets
import threading

import pytest

from client.errors import ClientError
from client.mailstore import MailStore
from client.messenger import INTERNAL_TRIES, Messenger
from client.relay import RelayClient
from client.rpc import DeviceClient
from client.state import ClientState
from device.engine import Device
from device.errors import DeviceError, NothingToGrant, Replay
from device.storage.padstore import PadStore
from onetimechat import package as fmt
from onetimechat.errors import OTCError
from tests import lifecycle_checker as checker
from tests.chat_fixtures import make_world
from tests.conftest import make_pair, pad_bytes
from tests.test_pad_lifecycle import send_until_exhausted

SIZE = 4096
BOBS_FIRST = SIZE - 16 - 34  # the responder's first control segment (it sends downward from N - 16)


def opened_pair(tmp_path, size: int):
    """alice (initiator) and bob (responder) in process, the pad id, and a copy of the pad as it was made (what
    the malicious peer holds); closed after the test."""
    home_a, home_b, pad_id = make_pair(tmp_path, size=size)
    devices = Device.open(home_a), Device.open(home_b)
    yield (*devices, pad_id, pad_bytes(home_a, pad_id))
    for device in devices:
        device.close()


@pytest.fixture
def pair(tmp_path):
    yield from opened_pair(tmp_path, SIZE)


def split_of(device: Device, pad_id: bytes) -> tuple[int, int]:
    pad = device.store.pad(pad_id)
    assert pad is not None
    return pad.split, pad.split_epoch


def assert_consumed_and_wiped(device: Device, package: bytes) -> None:
    """The package opens no more (its segment is consumed) and its pad bytes are zeros on disk."""
    with pytest.raises(Replay):
        device.unpackage(package)
    start, end = checker.segment(package)
    pad_id = package[5:21]
    assert pad_bytes(device.store.home, pad_id)[start:end] == bytes(end - start)


# -- F1: numbers past SQLite's integers in a correctly tagged control package -----------------------------------

@pytest.mark.parametrize("epoch", [2**64 - 1, 2**63 - 1, 2**63 - 2, 2**62])
def test_a_grant_with_an_epoch_out_of_range_is_refused_consumed_and_wiped(pair, epoch):
    a, _b, pad_id, pad = pair
    before = split_of(a, pad_id)
    grant = checker.forge_grant(pad, False, pad_id, BOBS_FIRST, epoch, SIZE // 2 + 500)
    opened = a.unpackage(grant)
    assert opened.control == "refused"
    assert any("epoch is out of range" in w for w in opened.warnings)
    assert split_of(a, pad_id) == before
    assert_consumed_and_wiped(a, grant)
    assert a.store.event_counts(("grant-refused",)) == {"grant-refused": 1}


def test_a_request_with_numbers_past_the_pad_is_recorded_within_it(pair):
    a, _b, pad_id, pad = pair
    request = checker.forge_request(pad, False, pad_id, BOBS_FIRST, 2**64 - 1, 2**64 - 1)
    opened = a.unpackage(request)
    assert opened.control == "request"
    (move,) = [m for m in a.store.split_moves(pad_id) if m["how"] == "requested"]
    assert move["amount"] == SIZE  # nobody can want more than the whole pad
    assert a.answer_request(opened) is None  # it says it has the whole pad left: nothing is given
    assert_consumed_and_wiped(a, request)


def test_the_highest_epoch_taken_still_leaves_every_grant_sayable(pair):
    """F1b: an epoch just under the bound is applied; this device's own grants go on until its epoch would
    reach the bound, then it gives nothing -- refused before any commit, never a grant that cannot be said."""
    a, b, pad_id, pad = pair
    grant = checker.forge_grant(pad, False, pad_id, BOBS_FIRST, (1 << 62) - 2, SIZE // 2 + 600)
    assert a.unpackage(grant).control == "applied"
    assert split_of(a, pad_id) == (SIZE // 2 + 600, (1 << 62) - 1)
    made, given = a.grant(pad_id, 100)
    assert given == 100 and checker.control(bytes(made.package), pad) == ("grant", (1 << 62) - 1, SIZE // 2 + 500)
    assert split_of(a, pad_id) == (SIZE // 2 + 500, 1 << 62)
    assert isinstance(a.store.pad(pad_id).split_epoch, int)
    moves = len(a.store.split_moves(pad_id))
    with pytest.raises(NothingToGrant):
        a.grant(pad_id, 100)
    assert split_of(a, pad_id) == (SIZE // 2 + 500, 1 << 62) and len(a.store.split_moves(pad_id)) == moves
    # The grant alice made at epoch 2^62 - 1 opens at bob's as any grant does (here refused: the split it names
    # is not in his favour, as the forged grant never moved his limit).
    assert b.unpackage(bytes(made.package)).control == "refused"


def test_any_failure_applying_a_control_package_still_consumes_and_wipes_it(pair, monkeypatch):
    """Whatever goes wrong while a verified control package is applied (here a fault put into the store), its
    segment is recorded as used and overwritten: it is set aside (control-failed), never left to open again."""
    a, _b, pad_id, pad = pair

    def broken(*_args):
        raise OverflowError("a fault while applying a control package")

    monkeypatch.setattr(PadStore, "_on_control", broken)
    before = split_of(a, pad_id)
    grant = checker.forge_grant(pad, False, pad_id, BOBS_FIRST, 0, SIZE // 2 + 500)
    opened = a.unpackage(grant)
    assert opened.control == "malformed"
    assert split_of(a, pad_id) == before
    assert_consumed_and_wiped(a, grant)
    assert a.store.event_counts(("control-failed",)) == {"control-failed": 1}


# -- F1 over the RPC: a poisoned control package does not hold the laptop's mailbox ------------------------------

RPC_SIZE = 8192


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, names=("alice", "bob"), size=RPC_SIZE)
    yield w
    w.close()


def laptop(world, who: str) -> Messenger:
    person = world.people[who]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    return Messenger(device, RelayClient(world.relay_url), MailStore(device.url, home=person.laptop))


def the_pad(world) -> tuple[bytes, bytes]:
    (path,) = (world.people["alice"].home / "pads").glob("*.pad")
    return bytes.fromhex(path.stem), path.read_bytes()


def poll_a_few_times(m: Messenger, times: int) -> list:
    events: list = []
    for _ in range(times):
        try:
            m.poll(events.append)
        except ClientError:
            pass
    return events


def test_a_poisoned_grant_from_the_peer_is_refused_and_the_next_message_is_read(world):
    pad_id, pad = the_pad(world)
    alice, bob = laptop(world, "alice"), laptop(world, "bob")
    (contact,) = alice.device.call("contacts")
    # bob's device seals the poison below where it sends from next, so that its ordinary message follows
    poison = checker.forge_grant(pad, False, pad_id, RPC_SIZE - 16 - 34 - 1000, 2**64 - 1, RPC_SIZE // 2 + 500)
    RelayClient(world.relay_url).send(contact["mailboxes_in"][0], fmt.encode(poison), secrets.token_hex(16))
    bob.send("alice", "hello after the poison")
    events = poll_a_few_times(alice, 1)
    assert [e.kind for e in events] == ["control", "text"]
    assert events[0].control["outcome"] == "refused" and events[1].text == "hello after the poison"


def test_a_message_the_device_keeps_failing_on_is_set_aside_after_a_few_tries(world, monkeypatch):
    """A device bug (put here by a fault in the device server's process) answers one package with 500 "internal"
    each time: the laptop tries it INTERNAL_TRIES times, then sets it aside as refused and reads what follows."""
    alice, bob = laptop(world, "alice"), laptop(world, "bob")
    bob.send("alice", "the package that breaks the device")
    bob.send("alice", "the next message")
    (contact,) = alice.device.call("contacts")
    (first, _second), _ = RelayClient(world.relay_url).receive({contact["mailboxes_in"][0]: 0})
    broken = fmt.decode(first.contents)
    unpackage = Device.unpackage

    def failing(self, data):
        if bytes(data) == broken:
            raise RuntimeError("a device bug")
        return unpackage(self, data)

    monkeypatch.setattr(Device, "unpackage", failing)
    events = poll_a_few_times(alice, INTERNAL_TRIES - 1)
    assert events == []  # the device may be down for a moment: the messages wait on the relay
    events = poll_a_few_times(alice, 1)
    assert [(e.kind, e.code) for e in events] == [("refused", "device-error"), ("text", "")]
    assert "device-error" in events[0].warnings[0] and events[1].text == "the next message"
    assert poll_a_few_times(alice, 1) == []  # finished with: neither comes back


def test_the_failure_count_survives_a_restart_of_the_laptop(world):
    """The count lives in the laptop's message store, one row per message: a client restarted between tries
    does not start again from nothing, and a finished message's count goes with it."""
    person = world.people["alice"]
    url = laptop(world, "alice").device.url
    for expected in range(1, INTERNAL_TRIES + 1):
        store = MailStore(url, home=person.laptop)
        assert store.open_failed("relay", "mailbox", 7) == expected
        store.close()
    store = MailStore(url, home=person.laptop)
    store.finish("relay", "mailbox", 7)
    assert store.open_failed("relay", "mailbox", 7) == 1
    store.close()


# -- F2: requests answered at once never give more than the policy allows ---------------------------------------

BIG = 65536


def bob_requests(pad: bytes, pad_id: bytes, count: int, left: int = 0) -> list[bytes]:
    """``count`` requests sealed as bob's (the responder's), each on its own segment at the bottom of his half
    (clear of where his device sends from), asking for a lot."""
    return [checker.forge_request(pad, False, pad_id, BIG // 2 + 34 * i, 10**9, left) for i in range(count)]


def bob_talks(a: Device, b: Device, pad_id: bytes, down_to: int = 6000) -> None:
    """bob's device really sends until it has ``down_to`` bytes left, and alice's opens it all."""
    while b.store.pad(pad_id).send_left > down_to:
        a.unpackage(bytes(b.package("alice", b"b" * 1000).package))


def answered_at_once(answers) -> list[int]:
    """Each (device, opened request) answered in its own thread, all at once: the bytes each grant gave."""
    given: list[int] = []
    threads = [threading.Thread(target=lambda d=d, u=u: given.append(getattr(d.answer_request(u), "gives", 0)))
               for d, u in answers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return given


def test_two_requests_answered_at_once_by_two_processes_give_no_more_than_the_policy(tmp_path, monkeypatch):
    """Two device processes on one home (the RPC server and `otc device`, say) each open a request and decide
    before either grants: the grant's commit decides again on the locked pad, so the two together give at most
    half, then half of what is left (75%), never everything."""
    home_a, home_b, pad_id = make_pair(tmp_path, size=BIG)
    pad = pad_bytes(home_a, pad_id)
    first, second = Device.open(home_a), Device.open(home_a)
    with Device.open(home_b) as bob:
        bob_talks(first, bob, pad_id)
    unused = first.store.pad(pad_id).send_left
    opened = [device.unpackage(package) for device, package in zip((first, second), bob_requests(pad, pad_id, 2))]
    both_decided = threading.Barrier(2)
    grant = Device.grant

    def after_both_decided(self, pad_id, amount):  # one schedule two processes can take
        both_decided.wait(timeout=10)
        return grant(self, pad_id, amount)

    monkeypatch.setattr(Device, "grant", after_both_decided)
    given = answered_at_once(zip((first, second), opened))
    left = first.store.pad(pad_id).send_left
    first.close()
    second.close()
    assert len(given) == 2 and given[0] + given[1] > 0, given
    assert sum(given) <= unused * 3 // 4, (given, unused)
    assert left >= unused // 4 - 2 * 34  # what is left, but for the two grants' own segments


def test_ask_mode_shows_the_owner_the_pad_as_the_grant_finds_it(tmp_path):
    """F2b: two requests being answered at once (two laptops, or one hostile laptop making two calls); the
    owner approves whatever is shown. Requests are answered one at a time per pad, so nothing is shown with
    numbers a grant made meanwhile has changed."""
    from device.engine import GRANT_MODE

    home_a, _home_b, pad_id = make_pair(tmp_path, size=BIG)
    pad = pad_bytes(home_a, pad_id)
    shown: list[str] = []

    both_asked = threading.Barrier(2)

    class Owner:  # approves whatever the screen says, after waiting a little for a second question to come
        def ask(self, request):
            try:
                both_asked.wait(timeout=2)  # where the two answers' numbers were both worked out before either
            except threading.BrokenBarrierError:
                pass
            shown.append(request.plaintext.decode())
            return True

    a = Device(PadStore(home_a), Owner())  # type: ignore[arg-type]
    a.store.save_settings({GRANT_MODE: "ask"})
    unused = a.store.pad(pad_id).send_left
    opened = [a.unpackage(p) for p in bob_requests(pad, pad_id, 2)]
    given = answered_at_once((a, u) for u in opened)
    left = a.store.pad(pad_id).send_left
    a.close()
    spare = unused - 34
    # One question, with the numbers of the grant it makes; the second request, answered after the first
    # grant, is given that grant again (it is not in use yet), nothing more and no question.
    assert shown == [f"bob's device is running out of pad to send to you and asks for {10**9} bytes (it has 0"
                     f" left). Give it {spare // 2} of your {spare} unused bytes?"], shown
    assert given == [spare // 2, 0]
    assert left == unused - spare // 2 - 2 * 34


# -- L1: a peer that says it has nothing left must spend real packages before it is given more -----------------

def test_a_peer_saying_it_has_nothing_left_gets_nothing_until_seen_using_its_half(tmp_path):
    """bob's device lies in its requests ("0 left"), from the bottom of its half (so that it spends almost
    nothing). alice's device judges by what it has seen bob use: nothing is given until bob has really sent most
    of his half, then one grant, and no other until bob is seen using that one's bytes."""
    home_a, home_b, pad_id = make_pair(tmp_path, size=BIG)
    pad = pad_bytes(home_a, pad_id)
    a, b = Device.open(home_a), Device.open(home_b)
    unused = a.store.pad(pad_id).send_left
    lies = iter(checker.forge_request(pad, False, pad_id, BIG // 2 + 34 * i, 10**9, 0) for i in range(40))

    def lie() -> int:
        answer = a.answer_request(a.unpackage(next(lies)))
        return answer.gives if answer is not None else 0

    assert sum(lie() for _ in range(12)) == 0  # 12 requests, 408 bytes of bob's: nothing
    assert a.store.pad(pad_id).send_left == unused
    bob_talks(a, b, pad_id)  # bob really talks: alice sees his half used
    first = lie()
    assert 0 < first <= (unused - 34) // 2
    assert sum(lie() for _ in range(12)) == 0  # that grant is not in use yet: nothing more
    assert a.store.pad(pad_id).split == BIG // 2 - first  # alice's limit moved once
    a.close()
    b.close()


# -- F3: after crossing grants, bytes handed back are this device's again, not "given and unseen" ----------------

def test_a_grant_that_hands_back_a_refused_grants_bytes_clears_its_unseen_warning(pair):
    a, b, pad_id, pad = pair
    h, _ = a.grant(pad_id, 500)  # alice: split 2048 -> 1548
    g, _ = b.grant(pad_id, 500)  # bob: 2048 -> 2548 (crossing)
    assert a.unpackage(bytes(g.package)).control == "refused"
    assert b.unpackage(bytes(h.package)).control == "refused"
    assert a.granted_unseen() == {} and a.granted_lost() == {pad_id: 500}  # dead in the crossing (C2)
    g2, _ = b.grant(pad_id, 300)  # bob: 2548 -> 2848, at epoch 1: it gives alice [1548, 2848)
    assert a.unpackage(bytes(g2.package)).control == "applied"
    assert a.store.pad(pad_id).split == 2848
    sent = [bytes(h.package), bytes(g.package), bytes(g2.package)]
    while a.store.pad(pad_id).send_left >= 116:
        sent.append(bytes(a.package("bob", b"q" * 100).package))
    checker.assert_no_byte_twice(sent, SIZE)
    assert any(s < 2048 and e > 1548 for s, e in map(checker.segment, sent[3:]))  # alice uses them again
    assert a.granted_unseen() == {}
    assert not any(w.startswith("grant-unseen") for w in a.status()["warnings"])
    assert a.store.event_counts(("grant-returned",)) == {"grant-returned": 1}


# -- L2: a relay that drops exactly the grants (their kind byte is in the clear) ---------------------------------

L2_SIZE = 16384  # room for a request at 1% too


@pytest.fixture
def pair16k(tmp_path):
    yield from opened_pair(tmp_path, L2_SIZE)


def alice_talks_and_asks(a: Device, b: Device, deliver_grant, size: int = 20, rounds: int = 1000) -> list[bytes]:
    """alice sends until her pad is out; the relay hands bob every message and request; each grant bob's device
    answers with goes to ``deliver_grant`` (which may drop it). Every package made, for the checker."""
    made_all: list[bytes] = []
    for _ in range(rounds):
        try:
            made = a.package("bob", b"m" * size)
        except DeviceError:
            break
        made_all.append(bytes(made.package))
        b.unpackage(bytes(made.package))
        for control in made.control:
            made_all.append(bytes(control.package))
            answer = b.answer_request(b.unpackage(bytes(control.package)))
            if answer is not None:
                made_all.append(bytes(answer.package))
                deliver_grant(bytes(answer.package))
    return made_all


def test_a_relay_dropping_every_grant_burns_at_most_one_grants_bytes(pair16k):
    """No safe device can take back a grant it cannot know was lost (the peer may yet apply it): what a relay
    that drops every grant gets is one grant's bytes of the granter's half, never more -- later requests are
    answered with the same grant again, not new ones."""
    a, b, pad_id, pad = pair16k
    b_unused = b.store.pad(pad_id).send_left
    dropped: list[bytes] = []
    made = alice_talks_and_asks(a, b, dropped.append)
    assert len(dropped) >= 2  # asked at 10% and at 1%
    bodies = {checker.control(g, pad) for g in dropped}
    assert len(bodies) == 1  # the same grant, said again
    (_, epoch, split), = bodies
    assert (epoch, split) == (0, b.store.pad(pad_id).split) and b.store.pad(pad_id).split_epoch == 1
    left = b.store.pad(pad_id).send_left
    assert left >= b_unused // 2 - 34 * len(dropped)
    checker.assert_no_byte_twice(made, L2_SIZE)


def test_a_grant_dropped_once_is_said_again_and_its_bytes_are_used(pair16k):
    a, b, pad_id, pad = pair16k
    dropped: list[bytes] = []
    taken: list[tuple] = []

    def drop_the_first(grant: bytes) -> None:
        if not dropped:
            dropped.append(grant)
        else:
            taken.append((a.unpackage(grant).control, checker.control(grant, pad)))

    made = alice_talks_and_asks(a, b, drop_the_first)
    assert taken[0] == ("applied", checker.control(dropped[0], pad))  # the copy moved alice's split
    checker.assert_no_byte_twice(made, L2_SIZE)
    # alice used what bob gave, bob saw it: nothing given is left unused
    assert max(checker.segment(p)[1] for p in made if checker.kind(p) == 1) > L2_SIZE // 2
    assert b.granted_unseen() == {}
    assert not any(w.startswith("grant-unseen") for w in b.status()["warnings"])


def talk_read_until_asking(a: Device, b: Device, sent: list[bytes]) -> bytes:
    """alice talks until her device asks for more pad, bob's reading it all; the request (kept in ``sent``)."""
    while True:
        made = a.package("bob", b"x" * 100)
        sent.append(bytes(made.package))
        b.unpackage(bytes(made.package))
        if made.control:
            sent.append(bytes(made.control[0].package))
            return sent[-1]


def test_a_copy_of_a_grant_already_taken_changes_nothing(pair):
    a, b, pad_id, pad = pair
    sent: list[bytes] = []
    request = talk_read_until_asking(a, b, sent)
    first = b.answer_request(b.unpackage(request))
    assert first is not None and a.unpackage(bytes(first.package)).control == "applied"
    before = split_of(a, pad_id)
    again = b.regrant(pad_id)  # bob has not seen alice use it yet: he may say it again
    assert again.gives == 0 and checker.control(bytes(again.package), pad) == checker.control(bytes(first.package), pad)
    opened = a.unpackage(bytes(again.package))
    assert opened.control == "repeated" and opened.warnings == []
    assert split_of(a, pad_id) == before
    assert a.store.event_counts(("grant-refused",)) == {}
    checker.assert_no_byte_twice([*sent, bytes(first.package), bytes(again.package)], SIZE)


def _hostile_relay_run(tmp_path, seed: int, steps: int = 900) -> tuple[int, dict[str, int]]:
    """Both devices send, ask, and grant (by policy, grants said again included, and by their owners); a
    granter is killed after a grant's commit and before its package now and then; the relay delivers in any
    order, drops one package in twelve and replays old ones. After every step: no pad byte in two packages (read
    by the outside checker), and each device's pointer and split on its own side of the other's."""
    import random

    rng = random.Random(seed)  # the schedule only (not a secret)
    size = 32768
    home_a, home_b, pad_id = make_pair(tmp_path / f"seed{seed}", size=size)
    devices = {"A": Device.open(home_a), "B": Device.open(home_b)}
    to_name = {"A": "bob", "B": "alice"}
    produced: list[bytes] = []
    in_flight: list[tuple[str, bytes]] = []
    delivered: list[tuple[str, bytes]] = []
    outcomes: dict[str, int] = {}

    def killed(*_args):
        raise SystemExit("killed after the grant's commit")

    try:
        for _ in range(steps):
            who = rng.choice("AB")
            other = "B" if who == "A" else "A"
            act = rng.random()
            try:
                if act < 0.35:
                    made = devices[who].package(to_name[who], b"x" * rng.randint(1, 120))
                    for p in (made, *made.control):
                        produced.append(bytes(p.package))
                        in_flight.append((other, bytes(p.package)))
                elif act < 0.42:
                    made, _ = devices[who].grant(pad_id, rng.randint(1, 9000))
                    produced.append(bytes(made.package))
                    in_flight.append((other, bytes(made.package)))
                elif act < 0.45:
                    with pytest.raises(SystemExit):
                        devices[who].store.grant(pad_id, rng.randint(64, 9000), killed)
                elif act < 0.47:
                    made = devices[who].ask(to_name[who], rng.randint(1, 5000))
                    produced.append(bytes(made.package))
                    in_flight.append((other, bytes(made.package)))
                elif in_flight:
                    i = rng.randrange(len(in_flight)) if rng.random() < 0.7 else len(in_flight) - 1
                    to, package = in_flight.pop(i)
                    if rng.random() < 1 / 12:
                        continue  # dropped
                    if rng.random() < 0.1 and delivered:
                        to, package = rng.choice(delivered)  # replayed
                    try:
                        got = devices[to].unpackage(package)
                    except OTCError:
                        continue
                    delivered.append((to, package))
                    if got.control:
                        outcomes[got.control] = outcomes.get(got.control, 0) + 1
                    answer = devices[to].answer_request(got)
                    if answer is not None:
                        produced.append(bytes(answer.package))
                        in_flight.append(("B" if to == "A" else "A", bytes(answer.package)))
            except DeviceError:
                pass
            checker.assert_no_byte_twice(produced, size)
            pa, pb = devices["A"].store.pad(pad_id), devices["B"].store.pad(pad_id)
            assert pa.send_next <= pb.send_next and pa.split <= pb.split, (pa.split, pb.split)
        return len(produced), outcomes
    finally:
        for device in devices.values():
            device.close()


@pytest.mark.parametrize("seed", range(12))
def test_a_hostile_relay_and_killed_granters_never_put_a_byte_in_two_packages(tmp_path, seed):
    produced, outcomes = _hostile_relay_run(tmp_path, seed)
    assert produced > 50 and outcomes.get("applied", 0) > 0, outcomes


def test_after_crossing_grants_a_request_gets_a_new_grant_not_a_dead_copy(pair):
    """Both owners grant at once: each grant is refused at the other side, and neither can ever apply (each
    side's epoch is past it). Saying one again would be refused to no end: the next request is answered by the
    policy, with a grant that applies."""
    a, b, pad_id, pad = pair
    h, _ = a.grant(pad_id, 300)
    g, _ = b.grant(pad_id, 300)
    assert a.unpackage(bytes(g.package)).control == "refused"
    assert b.unpackage(bytes(h.package)).control == "refused"
    sent = [bytes(h.package), bytes(g.package)]
    answer = b.answer_request(b.unpackage(talk_read_until_asking(a, b, sent)))
    assert answer is not None and answer.gives > 0
    sent.append(bytes(answer.package))
    assert a.unpackage(bytes(answer.package)).control == "applied"
    assert split_of(a, pad_id)[0] == split_of(b, pad_id)[0]
    send_until_exhausted(a, "bob", sent)
    checker.assert_no_byte_twice(sent, SIZE)
