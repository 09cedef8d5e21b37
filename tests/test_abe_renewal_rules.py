"""Renewal pads are one-time pads under the pad store's rules (issue 20, an outside review).

The attacker is written here: a hostile relay that saw a real renewal's header (its pad id, its offset) posts
forged renewal packages on the same pad, at other offsets, with random bodies and tags, built with the
package format's own sealing and random "pad" bytes. The member's device must count every failed tag on that
pad and raise the forgery alarm at FORGERY_ALARM_AT (shown by ``otc device status``), log the refusals within
the RefusalBudget (bounded rows), keep them through log rotation, and still open the genuine renewal once;
its replay is refused. Two opens of one renewal at once: exactly one stores the key.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading

import pytest

from device.abe.renewal import PAD_BYTES, RenewalPads, RenewalRefused, plan_renewal, renew
from device.abe.store import AbeKeys
from device.engine import Device
from device.storage.padstore import EVENTS_KEPT, FORGERY_ALARM_AT, REFUSAL_ROWS, PadStore, RefusalBudget
from onetimechat import package as fmt
from onetimechat.cli import main
from provisioning.ceremony import HOST, JOIN
from tests.test_abe_grant import Owners, grant, homes  # noqa: F401 - the fixture

HOLDER = "attribute authority campus"


class HostileRelay:
    """Forges renewal packages on the pad of a real renewal it carried: same pad id, its own offsets."""

    def __init__(self, genuine: bytes) -> None:
        header = fmt.parse(genuine)
        self.pad_id, self.offset, self.length = header.pad_id, header.offset, header.length

    def forge(self, offset: int | None = None, length: int | None = None) -> bytes:
        length = self.length if length is None else length
        room = PAD_BYTES - self.offset - fmt.segment_length(length)  # inside the pad: its tag is checked
        offset = self.offset + int.from_bytes(os.urandom(4), "big") % room if offset is None else offset
        return bytes(fmt.seal(fmt.Kind.CONTROL, self.pad_id, offset, os.urandom(fmt.segment_length(length)),
                              os.urandom(length), os.urandom(fmt.AUTH_KEY_LEN)))


@pytest.fixture
def renewal(homes):  # noqa: F811
    """(authority home, member home, the genuine renewal package as it crossed the relay)."""
    auth, member = homes
    issued, received = grant(auth, member, "STAFF", Owners({HOST: True, JOIN: True}))
    assert not isinstance(issued, Exception) and not isinstance(received, Exception), (issued, received)
    with PadStore(auth) as store:
        keys = AbeKeys(store)
        (sent,) = renew(keys, plan_renewal(keys, end_period=True), os.urandom)
    return auth, member, fmt.decode(sent.package)


def _pad_state(member) -> tuple:
    with sqlite3.connect(member / "device.db") as db:
        state = (db.execute("SELECT pad, next FROM abe_pads").fetchone(),
                 db.execute("SELECT count(*) FROM abe_keys").fetchone()[0])
    db.close()
    return state


def _counts(store: PadStore) -> dict[str, int]:
    return dict(store._read("SELECT event, count(*) FROM events GROUP BY event"))


def test_the_reviews_repro_five_forgeries_count_and_raise_the_alarm(renewal, capsys):
    """The finding's repro: five forgeries on a real renewal's pad, each through a fresh RenewalPads."""
    _, member, genuine = renewal
    relay = HostileRelay(genuine)
    before = _pad_state(member)
    with PadStore(member) as store:
        for n in range(1, 6):
            with pytest.raises(RenewalRefused) as refused:
                RenewalPads(AbeKeys(store)).open(relay.forge())
            assert "opened already" not in str(refused.value)
            assert store.tag_failures() == {relay.pad_id: n}
            alarms = _counts(store).get("forgery-alarm", 0)
            assert alarms == max(0, n - FORGERY_ALARM_AT + 1)  # from the third, as on a contact's pad
        forged = [e for e in store.events(100) if e["event"] == "abe-renewal-forged"]
        assert len(forged) == 5 and {e["pad_id"] for e in forged} == {relay.pad_id.hex()}
        assert all(e["contact"] == HOLDER and e["detail"] == "authentication failed" for e in forged)
        status = Device(store).status()
        assert any(a.startswith(f"forgery-alarm: 5 packages from {HOLDER}'s side") for a in status["alarms"])
        assert any(w.startswith("abe-renewal-forged: 5 ") for w in status["warnings"])
    assert _pad_state(member) == before  # rule 4: a failed tag changes no pad, stores no key
    capsys.readouterr()
    assert main(["device", "status", "--home", str(member)]) == 0
    assert f"forgery-alarm: 5 packages from {HOLDER}'s side failed authentication" in capsys.readouterr().out


def test_a_flood_of_forged_renewals_is_counted_within_the_budget_and_kept(renewal):
    _, member, genuine = renewal
    relay = HostileRelay(genuine)
    flood = 200
    before = _pad_state(member)
    with PadStore(member) as store:
        rows_before = store._read("SELECT count(*) FROM events")[0][0]
        budget = RefusalBudget(clock=lambda: 0.0)  # one minute that never ends: the budget alone bounds rows
        pads = RenewalPads(AbeKeys(store), refusals=budget)
        for i in range(flood):
            with pytest.raises(RenewalRefused):
                # Same pad id; its own offsets (some at the genuine one's), random bodies and tags.
                pads.open(relay.forge(offset=relay.offset if i % 10 == 0 else None))
        # The first REFUSAL_ROWS are written and counted at once; the rest are counted in memory...
        assert store.tag_failures()[relay.pad_id] == REFUSAL_ROWS
        assert budget.pending() == flood - REFUSAL_ROWS
        pads.flush_refusals()  # ...and written as one row (within the minute, or when the device closes)
        assert store.tag_failures()[relay.pad_id] == flood  # the alarm counts every tag
        counts = _counts(store)
        assert counts["abe-renewal-forged"] == REFUSAL_ROWS
        assert counts["forgery-alarm"] == REFUSAL_ROWS - FORGERY_ALARM_AT + 1
        (aggregate,) = [e for e in store.events(1000) if e["event"] == "package-refusals"]
        assert aggregate["length"] == flood - REFUSAL_ROWS and "abe-renewal-forged" in aggregate["detail"]
        assert store._read("SELECT count(*) FROM events")[0][0] - rows_before == 2 * REFUSAL_ROWS - 1
        # Ordinary events rotate; the evidence stays.
        with store._transaction() as conn:
            for _ in range(EVENTS_KEPT + 2_000):
                store._log(conn, "ceremony-started", detail="flood")
        kept = _counts(store)
        assert kept["abe-renewal-forged"] == REFUSAL_ROWS and kept["package-refusals"] == 1
        assert kept["forgery-alarm"] == counts["forgery-alarm"] and "abe-renewal-pad" not in kept  # rotated
    assert _pad_state(member) == before

    # The genuine renewal still opens, once; its replay is refused before a pad byte is read, and kept.
    with PadStore(member) as store:
        pads = RenewalPads(AbeKeys(store))
        assert pads.open(genuine).period == 2
        for _ in range(3):
            with pytest.raises(RenewalRefused, match="opened already"):
                pads.open(genuine)
        # A forgery below the frontier now is a replay too (the bytes there are destroyed: never read).
        with pytest.raises(RenewalRefused, match="opened already"):
            pads.open(relay.forge(offset=relay.offset + 1))
        with pytest.raises(RenewalRefused, match="outside its renewal pad"):
            pads.open(relay.forge(offset=1 << 40))
        assert store.tag_failures()[relay.pad_id] == flood
        with store._transaction() as conn:
            for _ in range(EVENTS_KEPT + 2_000):
                store._log(conn, "ceremony-started", detail="flood")
        kept = _counts(store)
        assert kept["abe-renewal-replay"] == 4 and kept["abe-renewal-out-of-range"] == 1
        assert "abe-renewal-opened" not in kept  # ordinary: rotated


def test_forged_renewals_through_the_devices_budget_reach_the_alarm_after_a_restart(renewal):
    """Over RPC the device's own RefusalBudget is used (device/abe/rpc.py); its tag failures are on disk."""
    _, member, genuine = renewal
    relay = HostileRelay(genuine)
    with PadStore(member) as store:
        device = Device(store, refusals=RefusalBudget(rows=1, clock=lambda: 0.0))
        pads = RenewalPads(AbeKeys(store), refusals=device.refusals)
        for _ in range(FORGERY_ALARM_AT):
            with pytest.raises(RenewalRefused):
                pads.open(relay.forge())
        assert store.tag_failures()[relay.pad_id] == 1  # one written; two counted beyond the budget
        assert device.status()["alarms"] == []
        device.flush_refusals()  # the device's flush adds them to the pad's count: the alarm, as for any pad
        assert store.tag_failures()[relay.pad_id] == FORGERY_ALARM_AT
        alarm = [e for e in store.events(50) if e["event"] == "forgery-alarm"]
        assert len(alarm) == 1 and alarm[0]["contact"] == HOLDER and alarm[0]["pad_id"] == relay.pad_id.hex()
    with PadStore(member) as store:
        assert any(HOLDER in a for a in Device(store).status()["alarms"])
        assert RenewalPads(AbeKeys(store)).open(genuine).period == 2


def test_two_opens_of_one_renewal_at_once_store_it_exactly_once(renewal, tmp_path):
    """Check and use in one transaction: of two concurrent opens (two stores on one home, as the device's
    server and `otc abe renewals --home` would be), exactly one stores the key; the other is refused."""
    _, member, genuine = renewal
    for trial in range(4):
        home = tmp_path / f"trial{trial}"
        shutil.copytree(member, home)
        stores = [PadStore(home), PadStore(home)]
        barrier = threading.Barrier(2)
        results: list[object] = [None, None]

        def open_it(i: int) -> None:
            pads = RenewalPads(AbeKeys(stores[i]))  # noqa: B023 - run and joined within the iteration
            barrier.wait()  # noqa: B023
            try:
                results[i] = pads.open(genuine)  # noqa: B023
            except RenewalRefused as exc:
                results[i] = exc  # noqa: B023

        threads = [threading.Thread(target=open_it, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        try:
            refused = [r for r in results if isinstance(r, RenewalRefused)]
            assert len(refused) == 1 and "opened already" in str(refused[0]), results
            assert sum(1 for k in AbeKeys(stores[0]).held() if k.period == 2) == 1
            assert _counts(stores[0])["abe-renewal-opened"] == 1
        finally:
            for s in stores:
                s.close()


def test_the_devices_screen_shows_a_renewal_pads_forgery_alarm_live_and_after_a_restart(renewal):
    """Through the device's server (abe_open_renewal, its RefusalBudget): the alarm on its screen."""
    from device.server import Server, ServerConfig
    from device.ui import Console, PanelSource

    _, member, genuine = renewal
    relay = HostileRelay(genuine)

    def serve() -> tuple[Server, Console]:
        console = Console("alice", "touchscreen")
        return Server(ServerConfig(home=member, source=PanelSource(console), console=console), "127.0.0.1", 0), \
            console

    server, console = serve()
    try:
        service = server.app.extensions["otc"]
        open_renewal = service.methods["abe_open_renewal"]
        for _ in range(FORGERY_ALARM_AT):
            assert not [a for a in console.snapshot().alarms if a.kind == "forgery-alarm"]
            with pytest.raises(RenewalRefused):
                open_renewal(None, {"package": fmt.encode(relay.forge())})
        (alarm,) = [a for a in console.snapshot().alarms if a.kind == "forgery-alarm"]
        assert HOLDER in alarm.text
        assert open_renewal(None, {"package": fmt.encode(genuine)})["key"]["period"] == 2
    finally:
        server.close()
    server, console = serve()  # a forgery alarm outlives restarts: tag failures are counted on disk
    try:
        (alarm,) = [a for a in console.snapshot().alarms if a.kind == "forgery-alarm"]
        assert HOLDER in alarm.text and f"{FORGERY_ALARM_AT} packages refused" in alarm.text
    finally:
        server.close()
