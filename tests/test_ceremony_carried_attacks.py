"""The ceremony as the device runs it for a laptop, against hostile peers and laptops (an outside red team).

Each attacker is written here: a peer that trickles the agreement's bytes, one that makes the pad far too
slowly, strangers who reach the ceremony listener before the laptop does, a peer that cuts each ceremony
after the offer under a new device id, and a second laptop reading a ceremony's status. The budgets are
shrunk for the tests (``Limits``); the arithmetic at the real budgets, a 256 MiB pad at the slowest HRNG's
pace included, is checked on a clock the test moves.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import pytest

from client.errors import RemoteError
from client.rpc import DeviceClient, pair
from client.state import ClientState
from device.ceremonies import Budget, CeremonyRunner, Limits
from device.storage.padstore import PadStore
from provisioning.ceremony import CHUNK, HOST, JOIN, MAX_PARTIALS, Ceremony, Partial
from provisioning.errors import CeremonyBroken, CeremonyError, CeremonyRefused
from provisioning.wire import Wire
from tests.test_pair_from_laptop import Served, owner, serve

MiB = 1 << 20


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("not within the time allowed")


def laptop_of(device: Served) -> DeviceClient:
    return DeviceClient(device.url, state=ClientState(device.laptop), timeout=30)


def runner_of(device: Served) -> CeremonyRunner:
    return device.server.app.extensions["otc"].ceremonies  # type: ignore[no-any-return]


def present(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(bytes.fromhex(token))
    return sock


def let_go(sock: socket.socket) -> bool:
    """Whether the device closed ``sock`` (read to its end: what the device sent before is skipped)."""
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def ended(client: DeviceClient, ceremony: str) -> dict:
    """The ceremony's last status, once it has ended."""
    return wait_for(lambda: (lambda s: s if s["stage"] in ("done", "failed") else None)(  # type: ignore[return-value]
        client.call("ceremony_status", ceremony=ceremony)))


@pytest.fixture
def alice(tmp_path):
    device = serve(tmp_path, "alice")
    yield device
    device.server.close()


# -- 1. no ceremony lives for ever --------------------------------------------------------------


def test_a_peer_trickling_the_agreement_is_cut_off_and_the_slot_frees(alice):
    runner_of(alice).limits = replace(Limits(), agree_s=2.0)
    client = laptop_of(alice)
    armed = client.call("ceremony_start", role="host", size=65536)
    trickler = present(armed["port"], armed["token"])
    stop = threading.Event()

    def trickle() -> None:
        """A frame header, one byte at a time, each well inside any per-read timeout: never a whole hello."""
        try:
            for byte in b"\x00\x00\x10\x00\x02" + b"{" * 4096:
                if stop.wait(0.2):
                    return
                trickler.sendall(bytes([byte]))
        except OSError:
            return  # the device closed the connection

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        status = ended(client, armed["ceremony"])
        assert status["stage"] == "failed"
        assert status["message"] == "The other device did not finish the key agreement within 2 seconds: " \
                                    "pairing stopped."
        assert alice.console.snapshot().ceremony.message == status["message"]  # the screen says why
        assert let_go(trickler)
        again = client.call("ceremony_start", role="host", size=65536)  # the one ceremony slot is free
        assert again["ceremony"] != armed["ceremony"]
    finally:
        stop.set()
        thread.join(10)
        trickler.close()


class Throttle:
    """A proxy between the device's ceremony connection and a peer: the peer's bytes go on at ``rate``."""

    def __init__(self, device: socket.socket, rate: int) -> None:
        self.device, self.rate = device, rate
        self.peer, self.inner = socket.socketpair()
        self.threads = [threading.Thread(target=self._pipe, args=args, daemon=True)
                        for args in ((self.inner, self.device, True), (self.device, self.inner, False))]
        for thread in self.threads:
            thread.start()

    def _pipe(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while True:
                data = source.recv(self.rate // 10 if slow else 1 << 16)
                if not data:
                    break
                sink.sendall(data)
                if slow:
                    time.sleep(0.1)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        for sock in (self.peer, self.inner, self.device):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self.threads:
            thread.join(10)
        for sock in (self.peer, self.inner, self.device):
            sock.close()


def test_a_pad_made_below_the_minimum_rate_is_stopped_with_the_reason_and_the_slot_frees(alice, tmp_path):
    # The peer is a real joining device whose bytes reach alice's at 64 KiB/s; alice's budget asks 1 MiB/s
    # after a second's grace (the real one asks 16 KiB/s after ten minutes).
    runner_of(alice).limits = replace(Limits(), min_rate=MiB, transfer_grace_s=1.0)
    bob = tmp_path / "bob-peer"
    PadStore.init(bob, "bob").close()
    client = laptop_of(alice)
    seen: list[str] = []
    answering = owner(alice, True, seen)
    armed = client.call("ceremony_start", role="host", size=4 * CHUNK)
    proxy = Throttle(present(armed["port"], armed["token"]), rate=64 << 10)
    peer_result: list[object] = []

    def peer() -> None:
        with PadStore(bob) as store:
            wire = Wire(proxy.peer)
            try:
                peer_result.append(Ceremony(store, JOIN, random_bytes=os.urandom, compare=lambda sas: True).run(wire))
            except CeremonyError as exc:
                peer_result.append(exc)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    try:
        status = ended(client, armed["ceremony"])
        assert status["stage"] == "failed" and status["message"].startswith(
            "The pad was made slower than 1024 KiB/s: pairing stopped"), status
        assert seen and status["sas"] == seen[0]  # it got past the string: the budget stopped the transfer
        thread.join(30)
        assert peer_result and isinstance(peer_result[0], CeremonyError)
        with PadStore(alice.home) as store:
            assert store.pads() == []
        client.call("ceremony_start", role="host", size=65536)  # the slot is free
    finally:
        answering.join(5)
        proxy.close()
        thread.join(10)


def test_the_budgets_at_their_real_values_let_a_slow_pad_through_and_stop_a_trickle():
    """On a clock the test moves: a 256 MiB pad made at 40 KB/s (the slowest HRNG docs/hrng.md names, slower
    than any cable) is never stopped; one 4 MiB chunk every 599 s (just inside the 600 s read timeout) is."""
    limits, size = Limits(), 256 * MiB

    def run(rate: float | None, every: float = 1.0) -> tuple[str | None, float]:
        now = 1000.0
        budget = Budget(limits, now)
        state: dict = {"stage": "connected"}
        for stage in ("connected", "compare"):  # the agreement, then both owners take their time
            state = {"stage": stage, "sas": "123-456-789"}
            now += 100.0
            assert budget.overdue(state, now) is None
        state = {"stage": "transfer", "done": 0, "total": size}
        assert budget.overdue(state, now) is None
        made = 0.0
        while state["done"] < size:
            now += every
            made = made + rate * every if rate is not None else made + CHUNK
            state = {**state, "done": min(int(made) // CHUNK * CHUNK, size)}
            reason = budget.overdue(state, now)
            if reason is not None:
                return reason, now
        now += 60.0
        return budget.overdue({"stage": "verify", "done": size, "total": size}, now), now

    assert run(40_000)[0] is None
    reason, when = run(None, every=599.0)
    assert reason is not None and reason.startswith("The pad was made slower than 16 KiB/s")
    assert when - 1200.0 <= limits.transfer_grace_s + size / limits.min_rate  # within the pad's budget


def test_each_stage_has_its_budget_and_an_earlier_stage_seen_again_resets_nothing():
    limits = Limits(agree_s=10.0, compare_s=50.0, finish_s=5.0, min_rate=1000.0, transfer_grace_s=20.0)
    budget = Budget(limits, 0.0)
    assert budget.overdue({"stage": "connected"}, 9.9) is None
    assert "key agreement within 10 seconds" in str(Budget(limits, 0.0).overdue({"stage": "connected"}, 10.0))
    assert budget.overdue({"stage": "compare"}, 9.9) is None  # the string shown: its own budget from here
    assert budget.overdue({"stage": "compare"}, 59.8) is None
    assert "not answered on both devices within 50 seconds" in str(budget.overdue({"stage": "compare"}, 59.9))
    budget = Budget(limits, 0.0)
    budget.overdue({"stage": "transfer", "done": 0, "total": 100_000}, 1.0)
    assert budget.overdue({"stage": "compare"}, 15.0) is None
    # Seen again, the earlier stage gives no fresh budget: the transfer's rule still holds.
    assert budget.overdue({"stage": "compare"}, 21.5) is not None
    assert budget.overdue({"stage": "transfer", "done": 10_000, "total": 100_000}, 30.0) is None
    assert budget.overdue({"stage": "transfer", "done": 10_000, "total": 100_000}, 31.5) is not None
    assert budget.overdue({"stage": "verify"}, 40.0) is None
    assert "within 5 seconds of the last chunk" in str(budget.overdue({"stage": "verify"}, 45.0))


# -- 2. strangers at the listener ----------------------------------------------------------------------


@pytest.fixture
def arm(tmp_path):
    """Arm a bare runner with a job that only notes it ran, reading what the laptop sent first (the connection
    it was given is the laptop's); (runner, what ceremony_start answers, ran, given)."""
    home = tmp_path / "dev"
    PadStore.init(home, "dev").close()
    store = PadStore(home)
    runners: list[CeremonyRunner] = []

    def armed(limits: Limits) -> tuple[CeremonyRunner, dict, threading.Event, list]:
        runner = CeremonyRunner(lambda: store, "127.0.0.1", None, None, lambda: nullcontext(os.urandom), limits)
        runners.append(runner)
        ran = threading.Event()
        given: list = []

        def job(store: PadStore, wire: Wire, random_bytes: Callable[[int], bytes]) -> dict:
            given.append(wire.sock.recv(5))
            ran.set()
            return {}

        return runner, runner.arm("pad", "host", job, owner="laptop"), ran, given

    yield armed
    for runner in runners:
        runner.close()
    wait_for(lambda: all(r.report(None, None) == {"stage": "idle"} for r in runners))
    store.close()


def test_strangers_who_connect_first_do_not_keep_the_laptop_from_presenting_its_token(arm):
    # Strangers hold connections silently (for longer than the laptop's connect timeout), show a wrong
    # token, or half of one; before, the device read one connection at a time with a backlog of one.
    runner, armed, ran, given = arm(replace(Limits(), token_read_s=60.0))
    port = armed["port"]
    silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    wrong = present(port, os.urandom(32).hex())
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    half.sendall(bytes.fromhex(armed["token"])[:16])
    try:
        assert let_go(wrong)  # dropped at once
        laptop = present(port, armed["token"])
        laptop.sendall(b"hello")
        assert ran.wait(30) and given == [b"hello"]  # the laptop's own connection, while the strangers hold
        assert wait_for(lambda: runner.report(armed["ceremony"], "laptop")["stage"] == "done")
        for sock in (*silent, half):  # the strangers are let go once the laptop is in
            assert let_go(sock)
        laptop.close()
    finally:
        for sock in (*silent, wrong, half):
            sock.close()


def test_a_silent_stranger_is_dropped_and_the_listener_keeps_listening(arm):
    runner, armed, ran, _ = arm(replace(Limits(), token_read_s=0.5))
    stranger = socket.create_connection(("127.0.0.1", armed["port"]), timeout=10)
    try:
        assert let_go(stranger)  # its half second is up
        assert runner.report(armed["ceremony"], "laptop")["stage"] == "waiting" and not ran.is_set()
        with present(armed["port"], armed["token"]) as laptop:
            laptop.sendall(b"hello")
            assert ran.wait(30)
    finally:
        stranger.close()


def test_a_flood_of_connections_drops_the_oldest_and_the_laptop_still_gets_in(arm):
    runner, armed, ran, _ = arm(replace(Limits(), pending=4, token_read_s=60.0))
    flood = [socket.create_connection(("127.0.0.1", armed["port"]), timeout=10) for _ in range(12)]
    try:
        assert let_go(flood[0])  # beyond four waiting, the oldest goes
        with present(armed["port"], armed["token"]) as laptop:
            laptop.sendall(b"hello")
            assert ran.wait(30)
    finally:
        for sock in flood:
            sock.close()


def test_no_token_before_the_deadline_ends_the_ceremony_and_frees_the_slot(arm):
    runner, armed, ran, _ = arm(replace(Limits(), token_s=1.0, token_read_s=60.0))
    stranger = socket.create_connection(("127.0.0.1", armed["port"]), timeout=10)
    try:
        status = wait_for(lambda: (lambda s: s if s["stage"] == "failed" else None)(
            runner.report(armed["ceremony"], "laptop")))
        assert "No laptop connected" in status["message"] and not ran.is_set()  # type: ignore[index]
        assert let_go(stranger)
        runner.arm("pad", "host", lambda store, wire, random_bytes: {}, owner="laptop")  # not busy
    finally:
        stranger.close()


# -- 3. partial pads a peer leaves behind ---------------------------------------------------------------


class CutAfterTheOffer(Ceremony):
    """A hostile host: its pad is offered and accepted, then it cuts the connection before the first chunk, so
    the joining device is left holding a recorded partial pad (a sparse file of the whole size)."""

    def _transfer(self, wire: Wire, partial: object, start: int) -> None:
        raise CeremonyBroken("cut by the attacker after the offer")


def hostile_ceremony(alice: PadStore, peer: Path, size: int) -> Exception | None:
    """``peer`` (a device id of its own each time it is a new home) hosts a pad of ``size`` for alice, then
    cuts; what alice's side ended with."""
    ours, theirs = socket.socketpair()
    outcome: list[Exception | None] = []

    def host() -> None:
        with PadStore(peer) as store:
            wire = Wire(theirs)
            try:
                CutAfterTheOffer(store, HOST, random_bytes=os.urandom, compare=lambda sas: True, size=size).run(wire)
            except CeremonyError:
                pass
            finally:
                wire.close()

    thread = threading.Thread(target=host, daemon=True)
    thread.start()
    wire = Wire(ours)
    try:
        Ceremony(alice, JOIN, random_bytes=os.urandom, compare=lambda sas: True).run(wire)
        outcome.append(None)
    except CeremonyError as exc:
        outcome.append(exc)
    finally:
        wire.close()
        thread.join(30)
    return outcome[0]


def peers(tmp_path: Path, count: int) -> list[Path]:
    out = []
    for i in range(count):
        PadStore.init(tmp_path / f"claimed-{i}", f"claimed-{i}").close()
        out.append(tmp_path / f"claimed-{i}")
    return out


def partials_of(store: PadStore) -> dict[str, str]:
    """Alice's partial pads, pad id to the peer's device id, with their files."""
    kept = {p.pad_id: p.peer_device_id for p in Partial.recorded(store)}
    files = {path.name[: -len(".pad.partial")] for path in (store.home / "pads").glob("*.pad.partial")}
    assert files == set(kept)  # no file without its record, none swept only halfway
    return kept


def test_a_peer_cutting_after_the_offer_under_many_claimed_ids_leaves_a_bounded_number_of_partials(tmp_path):
    alice = tmp_path / "alice"
    PadStore.init(alice, "alice").close()
    claimed = peers(tmp_path, MAX_PARTIALS + 3)
    with PadStore(alice) as store:
        ids = []
        for peer in claimed:
            assert isinstance(hostile_ceremony(store, peer, 64 * MiB), CeremonyBroken)
            with PadStore(peer) as other:
                ids.append(other.device_id.hex())
            assert len(partials_of(store)) <= MAX_PARTIALS
        # The last MAX_PARTIALS peers' partials are kept (any of them may be an honest resume); the older went.
        assert sorted(partials_of(store).values()) == sorted(ids[-MAX_PARTIALS:])
        swept = [e for e in store.events(200) if e["event"] == "ceremony-swept"]
        assert len(swept) == 3 and all(f"at most {MAX_PARTIALS} unfinished pads" in e["detail"] for e in swept)
        # The same claimed id again, with another pad: one partial per peer, the newer.
        before = partials_of(store)
        assert isinstance(hostile_ceremony(store, claimed[-1], 32 * MiB), CeremonyBroken)
        after = partials_of(store)
        (new,) = set(after) - set(before)
        (old,) = set(before) - set(after)
        assert after[new] == before[old] == ids[-1] and list(after.values()).count(ids[-1]) == 1


def test_the_free_space_check_counts_what_kept_partials_may_still_fill(tmp_path, monkeypatch):
    # The partials' files are sparse: they take no space yet, but a resume fills them. With 300 MiB free,
    # before, every 64 MiB offer passed (300 >= 64 + 64) however many were kept.
    alice = tmp_path / "alice"
    monkeypatch.setattr(PadStore, "free_space", lambda self: 300 * MiB if self.home == alice else 1 << 50)
    PadStore.init(alice, "alice").close()
    claimed = peers(tmp_path, 4)
    with PadStore(alice) as store:
        for peer in claimed[:3]:
            hostile_ceremony(store, peer, 64 * MiB)
        kept = partials_of(store)
        assert len(kept) == 3  # 192 MiB they may still fill, 108 MiB left beside them
        # A fourth 64 MiB pad needs 64 MiB and the margin: the stalest partial goes to make room.
        assert isinstance(hostile_ceremony(store, claimed[3], 64 * MiB), CeremonyBroken)
        now = partials_of(store)
        assert len(now) == 3 and len(set(kept) - set(now)) == 1
        (swept,) = [e for e in store.events(200) if e["event"] == "ceremony-swept"]
        assert "its space is needed" in swept["detail"]
        # A pad that would not fit even with every partial swept is refused, and nothing is swept for it.
        refused = hostile_ceremony(store, claimed[0], 512 * MiB)
        assert isinstance(refused, CeremonyRefused) and "beside" in str(refused), refused
        assert partials_of(store) == now


# -- 4. a ceremony's status is its own ------------------------------------------------------------------


def test_a_ceremonys_status_is_read_by_its_id_by_its_laptop_only_and_forgotten_after_the_end(alice, tmp_path):
    runner_of(alice).limits = replace(Limits(), keep_status_s=3.0)
    client = laptop_of(alice)
    pair(alice.url, name="other-laptop", ask_code=lambda: alice.console.snapshot().pairing_code or "",
         state=ClientState(tmp_path / "other-laptop"))
    other = DeviceClient(alice.url, state=ClientState(tmp_path / "other-laptop"), timeout=30)
    bob = tmp_path / "bob-peer"
    PadStore.init(bob, "bob").close()

    # A whole ceremony, the joining device played here over the laptop's connection.
    seen: list[str] = []
    answering = owner(alice, True, seen)
    armed = client.call("ceremony_start", role="host", size=65536)
    with present(armed["port"], armed["token"]) as sock, PadStore(bob) as store:
        wire = Wire(sock)
        Ceremony(store, JOIN, random_bytes=os.urandom, compare=lambda sas: True).run(wire)
    answering.join(10)
    status = ended(client, armed["ceremony"])
    assert status["stage"] == "done" and status["sas"] == seen[0] and status["fingerprint"]
    assert status["ceremony"] == armed["ceremony"]

    # Another laptop learns nothing of it: not by its id, not without one.
    with pytest.raises(RemoteError) as info:
        other.call("ceremony_status", ceremony=armed["ceremony"])
    assert info.value.code == "ceremony-unknown"
    assert other.call("ceremony_status") == {"stage": "idle"}
    assert client.call("ceremony_status") == {"stage": "idle"}  # nor its own laptop, without the id

    # A new ceremony (the other laptop's) shows only its own state, never the last one's string.
    fresh = other.call("ceremony_start", role="host", size=65536)
    assert other.call("ceremony_status", ceremony=fresh["ceremony"]) == {
        "ceremony": fresh["ceremony"], "stage": "waiting", "kind": "pad", "role": "host"}
    assert other.call("ceremony_status") == {"stage": "busy"}

    # The ended ceremony's status goes a bounded time after its end.
    def forgotten() -> bool:
        try:
            client.call("ceremony_status", ceremony=armed["ceremony"])
        except RemoteError as exc:
            return exc.code == "ceremony-unknown"
        return False

    assert wait_for(forgotten)
    assert other.call("ceremony_status", ceremony=fresh["ceremony"])["stage"] == "waiting"
