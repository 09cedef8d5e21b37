"""Pairing under attack from the cable (issue 19): no one cuts off a pairing in progress or keeps pairing locked.

The attacker is written here: unauthenticated HTTP to /v1/pair/begin and /v1/pair/exchange (over the real
server), and the same steps against the pairing manager with a clock the test moves (for the hours-long part).
"""

from __future__ import annotations

import base64

import requests

from client.rpc import pair
from client.state import ClientState
from device.clients import ClientRegistry
from device.pairing import (
    FAILURE_MEMORY_S,
    LOGGED_PER_WINDOW,
    MAX_DELAY_S,
    PairingBusy,
    PairingFailed,
    PairingLocked,
    PairingManager,
)
from device.storage.padstore import PadStore
from tests.rpc_fixtures import ScriptedSource, rpc_device  # noqa: F401  (the fixture)


def test_a_begin_from_the_cable_does_not_cut_off_a_pairing_in_progress(rpc_device):  # noqa: F811
    refused = []

    def attacker_begin() -> None:
        answer = requests.post(rpc_device.url + "/v1/pair/begin", json={"name": "evil"}, timeout=10)
        refused.append((answer.status_code, answer.json()))

    def owner_types_the_code() -> str:
        attacker_begin()  # while the owner reads the code off the screen
        return rpc_device.source.codes[-1]

    state = ClientState(rpc_device.tmp / "laptop")
    pair(rpc_device.url, name="laptop", ask_code=owner_types_the_code, state=state)
    (status, body), = refused
    assert status == 409 and body["error"] == "pairing-busy"
    assert "Another pairing is in progress" in body["message"] and body["retry_after"] >= 1
    # Once the pairing completed, a new one may begin.
    assert requests.post(rpc_device.url + "/v1/pair/begin", json={"name": "next"}, timeout=10).status_code == 200


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def garbage_exchange(manager: PairingManager) -> None:
    """The attacker: begin, then a malformed SPAKE2 message."""
    session = bytes.fromhex(manager.begin("evil")["session"])
    try:
        manager.exchange(session, b"x")
    except PairingFailed:
        return
    raise AssertionError("a garbage exchange was accepted")


def test_one_garbage_exchange_an_hour_never_keeps_pairing_locked(tmp_path):
    PadStore.init(tmp_path / "home", "alice").close()
    with PadStore(tmp_path / "home") as store:
        clock = Clock()
        start = clock.now
        manager = PairingManager(store, ClientRegistry(store), ScriptedSource(), clock=clock)
        # A burst: locked after the free failures, never for more than the maximum.
        for _ in range(20):
            while True:
                try:
                    garbage_exchange(manager)
                    break
                except PairingLocked as locked:
                    assert locked.retry_after <= MAX_DELAY_S + 1
                    clock.now += locked.retry_after
        windows = int((clock.now - start) // 3600) + 1
        # Then one failure an hour, for a day: each finds the count forgotten, so pairing is never locked.
        for _ in range(24):
            clock.now += FAILURE_MEMORY_S + 1
            garbage_exchange(manager)
            assert manager.begin("owner")  # the owner can pair right away
            manager._drop()
            assert store.setting("pairing_failures") == "1"
        # 44 failures, but a bounded number of permanent rows: the rest counted into the rows written.
        rows = [e for e in store.events() if e["event"] == "pairing-failed"]
        assert len(rows) <= LOGGED_PER_WINDOW * windows + 24 < 44
        assert any("counted but not logged one by one" in (e["detail"] or "") for e in rows)


def test_a_begin_after_the_code_expired_starts_afresh(tmp_path):
    PadStore.init(tmp_path / "home", "alice").close()
    with PadStore(tmp_path / "home") as store:
        clock = Clock()
        manager = PairingManager(store, ClientRegistry(store), ScriptedSource(), ttl=300, clock=clock)
        manager.begin("abandoned")
        try:
            manager.begin("other")
            raise AssertionError("a second begin replaced the first")
        except PairingBusy as busy:
            assert 1 <= busy.retry_after <= 300
        clock.now += 301
        assert manager.begin("other")["expires_in"] == 300
        assert not [e for e in store.events() if e["event"] == "pairing-failed"]  # expiry is no failure


def test_garbage_exchange_over_http_is_refused_and_counted(rpc_device):  # noqa: F811
    begin = requests.post(rpc_device.url + "/v1/pair/begin", json={"name": "evil"}, timeout=10).json()
    answer = requests.post(rpc_device.url + "/v1/pair/exchange",
                           json={"session": begin["session"], "message": base64.b64encode(b"x").decode()}, timeout=10)
    assert answer.status_code == 401
    assert rpc_device.pair_client("owner").ping()["client"] == "owner"


def test_an_owner_giving_up_at_the_code_prompt_does_not_keep_pairing_busy(rpc_device):  # noqa: F811
    """A cold run of the README: Ctrl-C at the code prompt (or a code that is not one) left the session open,
    and every pairing, the right code included, was refused as busy for five minutes."""
    import pytest

    from client.errors import PairingError

    state = ClientState(rpc_device.tmp / "laptop")

    def gives_up() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pair(rpc_device.url, name="laptop", ask_code=gives_up, state=state)
    with pytest.raises(PairingError, match="8 digits"):
        pair(rpc_device.url, name="laptop", ask_code=lambda: "12-34", state=state)
    with pytest.raises(PairingError, match="8 digits"):  # refused before the device opens a session
        pair(rpc_device.url, name="laptop", code="000000", state=state)
    pair(rpc_device.url, name="laptop", ask_code=lambda: rpc_device.source.codes[-1], state=state)
    assert state.paired()


def test_a_stranger_cannot_cancel_someone_elses_pairing(rpc_device):  # noqa: F811
    started = requests.post(rpc_device.url + "/v1/pair/begin", json={"name": "owner"}, timeout=10).json()
    other = bytes(16).hex()
    answer = requests.post(rpc_device.url + "/v1/pair/cancel", json={"session": other}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"cancelled": False}
    busy = requests.post(rpc_device.url + "/v1/pair/begin", json={"name": "evil"}, timeout=10)
    assert busy.status_code == 409  # the owner's session still stands
    answer = requests.post(rpc_device.url + "/v1/pair/cancel", json={"session": started["session"]}, timeout=10)
    assert answer.json() == {"cancelled": True}
