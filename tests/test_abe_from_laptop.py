"""An attribute authority run through its laptop, as on the Pi (no shell on the device).

Each device runs under `otc device serve`'s server with its own screen (the
console the touchscreen draws) and a laptop paired with it. Over the device
RPC, through the real `otc` commands: the authority's owner makes it an
authority (confirmed on its screen), creates a room, and issues a key in
person, the two laptops carrying the grant and both owners comparing the
pairing string and the attributes on their devices' screens. The member then
joins the room and a message goes round.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from client.errors import RemoteError
from client.relay import RelayClient
from client.rooms import RoomClient
from client.rpc import DeviceClient
from client.state import ClientState
from device.abe.errors import NotAnAuthority
from device.abe.store import grant_local
from device.storage.padstore import PadStore
from device.ui import Console, Snapshot
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.conftest import otc
from tests.test_pair_from_laptop import Served, approve_everything, carried, client_of, finish, owner, serve, served

POLICY = "STAFF and (OPS or ADMIN)"


def answer_confirm(console: Console, approve: bool, seen: list) -> threading.Thread:
    """The owner: waits for a question on the device's screen and answers it there."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = console.snapshot().confirm
            if view is not None:
                seen.append(view)
                console.decide(approve, view.request_id)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def carry_grant(auth: Served, member: Served, attributes: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The two laptops run `otc abe grant host|join --device`."""
    return carried(auth, member, ["abe", "grant"], ["--attributes", attributes])


def answer_grant(device: Served, answer: bool, seen: list[Snapshot]) -> threading.Thread:
    """The owner compares the grant on the device's screen (kept whole in ``seen``) and answers there."""
    return owner(device, answer, seen, keep=lambda snap: snap)


@pytest.fixture
def devices(tmp_path):
    yield from served(tmp_path, "auth", "bob")


def become_authority(auth: Served, approve: bool) -> tuple[subprocess.CompletedProcess, list]:
    seen: list = []
    answering = answer_confirm(auth.console, approve, seen)
    result = otc("abe", "authority", "--device", auth.url, env=auth.env)
    answering.join(5)
    return result, seen


def test_an_authority_on_a_device_without_a_shell(devices, tmp_path):
    auth, bob = devices
    # A "no" on the device's screen leaves it no authority.
    result, seen = become_authority(auth, False)
    assert result.returncode == 1
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and err.startswith("ERROR: The owner did not approve"), err
    assert seen[0].kind == "authority" and seen[0].contact == "attribute authority"
    assert "Make auth an attribute authority?" in seen[0].text
    assert client_of(auth).call("abe_status")["authorities"] == []

    # A "yes" makes it one.
    result, seen = become_authority(auth, True)
    assert result.returncode == 0, result.stderr
    status = json.loads(otc("abe", "status", "--device", auth.url, "--json", env=auth.env, check=True).stdout)
    (own,) = status["authorities"]
    assert own["own"] and own["name"] == "auth" and own["keys"] == [] and status["issued"] == []
    assert f"fingerprint {own['fingerprint']}" in result.stdout.decode()
    assert "master" not in json.dumps(status)
    # Twice is refused before the owner is asked.
    with pytest.raises(RemoteError) as info:
        client_of(auth).call("abe_authority")
    assert info.value.code == "abe-already-authority"

    # A room, created on the authority through its laptop.
    seen_room: list = []
    answering = answer_confirm(auth.console, True, seen_room)  # creating a room is confirmed on the device
    made = otc("room", "create", "--device", auth.url, "--name", "ops", "--policy", POLICY, env=auth.env, check=True)
    answering.join(5)
    assert seen_room[0].kind == "room-create" and "Create the room ops?" in seen_room[0].text
    invite = made.stdout.decode().strip().splitlines()[-1]
    assert invite.startswith("otcroom1.")
    assert "Room ops (STAFF and (OPS or ADMIN)) of authority auth" in made.stdout.decode()

    # The grant: carried by both laptops, compared and confirmed on both devices' screens.
    screens: list[Snapshot] = []
    owners = [answer_grant(auth, True, screens), answer_grant(bob, True, screens)]
    host, join = carry_grant(auth, bob, "staff,OPS")
    (host_out, host_err), (join_out, join_err) = finish(host, join, owners)
    assert host.returncode == 0, host_err
    assert join.returncode == 0, join_err
    views = sorted((s.ceremony for s in screens), key=lambda v: v.role)
    assert [v.role for v in views] == ["host", "join"]
    for v in views:
        assert (v.kind, v.authority, v.member, v.attributes) == ("grant", "auth", "bob", ("OPS", "STAFF"))
        assert v.authority_fingerprint == own["fingerprint"] and v.sas == views[0].sas
    assert (views[0].peer, views[1].peer) == ("bob", "auth")
    for out in (host_out, join_out):
        assert f"Pairing string: {views[0].sas}; attributes OPS, STAFF from authority auth" in out
    assert "Issued a key for OPS, STAFF to bob" in host_out
    assert "Stored a key for OPS, STAFF from authority auth" in join_out
    # Both screens end on what was done.
    assert [d.console.snapshot().ceremony.stage for d in (auth, bob)] == ["done", "done"]
    status = client_of(bob).call("abe_status")
    assert [(a["name"], a["own"], a["keys"]) for a in status["authorities"]] == [("auth", False, [["OPS", "STAFF"]])]
    issued = client_of(auth).call("abe_status")["issued"]
    assert [(i["member"], i["attributes"], i["how"]) for i in issued] == [("bob", ["OPS", "STAFF"], "in person")]

    # What the owner saw is what the touchscreen draws: the grant's comparison screen.
    from device.touchscreen.testing import Screen, open_app

    host_view = next(s for s in screens if s.ceremony.role == "host")
    app = open_app(Console("auth", "touchscreen"))
    try:
        screen = Screen(app)
        app.render(host_view)
        assert screen.frame.screen == "ceremony"
        assert screen.texts("title") == ["Grant a key to bob"]
        assert screen.texts("attributes") == ["OPS, STAFF"]
        assert screen.texts("sas") == [views[0].sas]
        assert screen.shows(f"Authority auth · {own['fingerprint']}")
        assert screen.texts("grant-member") == ["Member bob"]
        assert screen.target("same").enabled and screen.target("different").enabled
    finally:
        app.close()

    # The member joins the room and a message goes round (carol got her key on one machine).
    carol = serve(tmp_path, "carol")
    with PadStore(auth.home) as a, PadStore(carol.home) as c:  # safe while both serve
        grant_local(a, c, "STAFF,ADMIN")
    relay = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}")), "127.0.0.1", 0,
                        threads=8).start()
    stop = threading.Event()
    approver = approve_everything([bob.console, carol.console], stop)
    try:
        members = [RoomClient(client_of(d), RelayClient(relay.url)) for d in (bob, carol)]
        for m in members:
            assert m.device.call("room_add", invite=invite)["room"] == "ops"
        for m in members:
            m.join("ops")
            for _ in range(2):
                for other in members:
                    other.sync("ops")
        assert all(m.room("ops")["keyed"] for m in members)
        members[0].send("ops", "granted through the laptops")
        assert "granted through the laptops" in [e.get("text") for e in members[1].sync("ops")]
        # The authority's view and a revocation, confirmed on its screen (issue 22).
        listed = json.loads(otc("abe", "members", "--device", auth.url, "--json", env=auth.env, check=True).stdout)
        assert [(i["member"], i["period"], i["revoked"]) for i in listed["issued"]] == [
            ("bob", 1, None), ("carol", 1, None)]
        for approve in (False, True):
            seen_revoke: list = []
            answering = answer_confirm(auth.console, approve, seen_revoke)
            result = otc("abe", "revoke", "--device", auth.url, "bob", env=auth.env)
            answering.join(5)
            assert seen_revoke[0].kind == "abe-revoke" and "Revoke the keys of bob?" in seen_revoke[0].text
            assert (result.returncode == 0) == approve, result.stderr
        assert "Revoked 1 key of bob" in result.stdout.decode()
        issued = client_of(auth).call("abe_members")["issued"]
        assert [i["member"] for i in issued if i["revoked"]] == ["bob"]
        # Bob's grant, carried by the laptops, left a renewal pad on both devices; the authority ends the period
        # and renews carol (bob is revoked) over hers, confirmed on its screen; carol's laptop fetches it.
        from device.abe.renewal import RenewalPads
        from device.abe.store import AbeKeys

        with PadStore(auth.home) as a, PadStore(bob.home) as b:
            assert [p["confirmed"] for p in RenewalPads(AbeKeys(b)).describe()] == [True]
            assert len([p for p in RenewalPads(AbeKeys(a)).describe() if p["confirmed"]]) == 2
        seen_renew: list = []
        answering = answer_confirm(auth.console, True, seen_renew)
        # A month-long next period, as the help's own example says: it crosses the RPC in seconds (2,592,000).
        result = otc("abe", "renew", "--device", auth.url, "--relay", relay.url, "--end-period", "--period", "30d",
                     env=auth.env)
        answering.join(5)
        assert result.returncode == 0, result.stderr
        assert seen_renew[0].kind == "abe-renew" and "Renew the keys of carol for period 2" in seen_renew[0].text
        assert "Not renewed: bob: revoked" in seen_renew[0].text
        out = result.stdout.decode()
        assert "Renewed 1 member for period 2" in out and "Not renewed: bob: revoked" in out
        got = otc("abe", "renewals", "--device", carol.url, "--relay", relay.url, env=carol.env, check=True)
        assert "Stored a renewed key for ADMIN, STAFF from authority auth (period 2" in got.stdout.decode()
        assert "No new renewal." in otc("abe", "renewals", "--device", carol.url, "--relay", relay.url,
                                        env=carol.env, check=True).stdout.decode()
        with PadStore(carol.home) as c:  # the relay deleted the opened renewal: not handed to the device again
            assert not [e for e in c.events(200) if e["event"] == "abe-renewal-replay"]
        assert "No new renewal." in otc("abe", "renewals", "--device", bob.url, "--relay", relay.url,
                                        env=bob.env, check=True).stdout.decode()
        # Renewed ahead (period 3, from period 2's end), then the period ended early all the same: period 3 is
        # withdrawn, period 4 starts now; the authority's screen says so, and carol's device never uses period 3.
        texts = []
        # Period 2 began by an early end a moment ago: ending early again is refused before anything is asked
        # (a retried early end would end another period), unless --again says so.
        refused = otc("abe", "renew", "--device", auth.url, "--relay", relay.url, "--end-period", env=auth.env)
        assert refused.returncode != 0 and b"--again" in refused.stderr and b"--resend" in refused.stderr
        for extra in ((), ("--end-period", "--again")):
            seen_renew = []
            answering = answer_confirm(auth.console, True, seen_renew)
            result = otc("abe", "renew", "--device", auth.url, "--relay", relay.url, *extra, env=auth.env)
            answering.join(5)
            assert result.returncode == 0, result.stderr
            texts.append((seen_renew[0].text, result.stdout.decode()))
        assert "Renewed 1 member for period 3" in texts[0][1] and "WITHDRAWN" not in texts[0][0]
        assert "Period 3, whose keys were issued ahead, is WITHDRAWN" in texts[1][0]
        assert "Renewed 1 member for period 4" in texts[1][1] and "Period 3, issued ahead, is withdrawn" in texts[1][1]
        got = otc("abe", "renewals", "--device", carol.url, "--relay", relay.url, env=carol.env, check=True)
        assert "(period 3" in got.stdout.decode() and "(period 4" in got.stdout.decode()
        status = otc("abe", "status", "--device", carol.url, env=carol.env, check=True).stdout.decode()
        assert "(period 3, " in status and "WITHDRAWN" in status
        listed = otc("abe", "members", "--device", auth.url, env=auth.env, check=True).stdout.decode()
        assert "period 3 withdrawn" in listed
        # Carol renewed ahead (period 5), approved; asked again, nothing is left to issue: the owner is not asked
        # to approve a renewal of nobody (a cold run's screen asked, then said "Renewed 0 members").
        seen_renew = []
        answering = answer_confirm(auth.console, True, seen_renew)
        otc("abe", "renew", "--device", auth.url, "--relay", relay.url, "carol", env=auth.env, check=True)
        answering.join(5)
        assert len(seen_renew) == 1
        asked: list = []
        done = threading.Event()

        def decline_any() -> None:  # were anything asked, it is seen and declined (the call then fails)
            while not done.is_set():
                view = auth.console.snapshot().confirm
                if view is not None:
                    asked.append(view)
                    auth.console.decide(False, view.request_id)
                done.wait(0.02)

        watcher = threading.Thread(target=decline_any, daemon=True)
        watcher.start()
        try:
            result = otc("abe", "renew", "--device", auth.url, "--relay", relay.url, "carol", env=auth.env)
        finally:
            done.set()
            watcher.join(5)
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert "Renewed 0 members" in out and "Not renewed: carol: already holds a key of period 5" in out
        assert "Confirm on the device" not in out and asked == []
    finally:
        stop.set()
        approver.join(5)
        carol.server.close()
        relay.close()


def test_a_grant_host_on_a_device_that_is_no_authority_stops_before_waiting(devices):
    _, bob = devices
    result = otc("abe", "grant", "host", "--device", bob.url, "--listen", "127.0.0.1:0", "--attributes", "A",
                 env=bob.env, timeout=30)
    err = result.stderr.decode().strip()
    assert result.returncode == 1 and err.splitlines() == ["ERROR: " + NotAnAuthority.user_text()]
    assert b"waiting for the other device" not in result.stdout


def test_a_no_on_either_screen_issues_nothing(devices):
    auth, bob = devices
    assert become_authority(auth, True)[0].returncode == 0
    screens: list[Snapshot] = []
    owners = [answer_grant(auth, True, screens), answer_grant(bob, False, screens)]
    host, join = carry_grant(auth, bob, "STAFF")
    (_, host_err), (_, join_err) = finish(host, join, owners)
    for proc, err in ((host, host_err), (join, join_err)):
        assert proc.returncode == 1
        errors = [ln for ln in err.strip().splitlines() if not ln.startswith("otc: ")]  # progress notes aside
        assert len(errors) == 1 and errors[0].startswith("ERROR: Grant stopped"), err
    assert bob.console.snapshot().ceremony.stage == "failed"
    assert client_of(auth).call("abe_status")["issued"] == []
    assert client_of(bob).call("abe_status")["authorities"] == []


@pytest.mark.parametrize("who, method, params, code", [
    ("auth", "abe_authority", {"name": 5}, "bad-request"),
    ("auth", "abe_authority", {"name": "someone-else"}, "bad-request"),
    ("auth", "room_create", {"policy": "A"}, "bad-request"),
    ("auth", "room_create", {"name": "ops", "policy": 7}, "bad-request"),
    ("auth", "room_create", {"name": "ops", "policy": ""}, "bad-request"),
    ("auth", "room_create", {"name": "bad name!", "policy": "A"}, "invalid-name"),
    ("auth", "room_create", {"name": "ops", "policy": "A and or B"}, "abe-policy"),
    ("auth", "room_create", {"name": "ops", "policy": "A and B or C"}, "abe-policy"),
    ("bob", "room_create", {"name": "ops", "policy": "A"}, "abe-not-authority"),
    ("auth", "ceremony_start", {"kind": "nope", "role": "host"}, "bad-request"),
    ("auth", "ceremony_start", {"kind": ["grant"], "role": "host"}, "bad-request"),
    ("auth", "ceremony_start", {"role": "host", "size": 65536, "attributes": "A"}, "bad-request"),
    ("auth", "ceremony_start", {"kind": "grant", "role": "both", "attributes": "A"}, "bad-request"),
    ("auth", "ceremony_start", {"kind": "grant", "role": "host"}, "bad-request"),
    ("auth", "ceremony_start", {"kind": "grant", "role": "host", "attributes": 3}, "bad-request"),
    ("auth", "ceremony_start", {"kind": "grant", "role": "host", "attributes": "A,b-c"}, "abe-policy"),
    ("auth", "ceremony_start", {"kind": "grant", "role": "host", "attributes": "A", "size": 9}, "bad-request"),
    ("auth", "ceremony_start", {"kind": "grant", "role": "join", "attributes": "A"}, "bad-request"),
    ("bob", "ceremony_start", {"kind": "grant", "role": "host", "attributes": "A"}, "abe-not-authority"),
])
def test_bad_params_get_a_documented_code(devices, who, method, params, code):
    auth, bob = devices
    with PadStore(auth.home) as store:
        from device.abe.store import AbeKeys

        AbeKeys(store).become_authority()
    client = client_of(auth if who == "auth" else bob)
    with pytest.raises(RemoteError) as info:
        client.call(method, **params)
    assert info.value.code == code, str(info.value)
    assert len(str(info.value).splitlines()) == 1
    if code == "abe-policy":
        assert "Policy error at character" in str(info.value)
    assert client.call("ceremony_status")["stage"] == "idle"  # nothing was armed
    assert auth.console.snapshot().confirm is None


@pytest.mark.parametrize("args, needle", [
    (["abe", "authority", "--laptop-with-no-device"],
     "Give --home DIR (on the device) or --device NAME|URL (from its laptop)"),
    (["abe", "status", "--device", "{url}", "--home", "/tmp/x"], "not allowed with"),
    (["abe", "grant", "join", "--device", "{url}", "--connect", "127.0.0.1:9", "--confirm", "auto"], "With --device"),
    (["abe", "status", "--device", "{url}", "--pin-file", "/tmp/pin"], "With --device"),
    (["room", "create", "--device", "{url}", "--pin-file", "/tmp/pin", "--name", "r", "--policy", "A"],
     "With --device"),
    (["room", "create", "--device", "{url}", "--name", "r", "--policy", "A or"], "Policy error at character"),
])
def test_usage_errors_from_the_laptop(devices, args, needle):
    auth, _ = devices
    with PadStore(auth.home) as store:
        from device.abe.store import AbeKeys

        AbeKeys(store).become_authority()
    env = auth.env
    if "--laptop-with-no-device" in args:  # neither flag, on a laptop paired with nothing: nothing to fall back on
        args, env = [a for a in args if a != "--laptop-with-no-device"], {"OTC_CLIENT_HOME": str(auth.laptop) + "-new"}
    result = otc(*[a.format(url=auth.url) for a in args], env=env)
    err = result.stderr.decode().strip()
    assert result.returncode != 0 and len(err.splitlines()) == 1 and needle in err, err


def test_a_device_without_a_screen_confirms_a_grant_on_its_terminal_or_in_auto_mode(tmp_path):
    """No console: the grant falls back to the confirm mode's own prompt (auto here, as in tests)."""
    from client.ceremony import carry
    from client.rpc import pair
    from device.abe.store import AbeKeys
    from device.confirm import AutoConfirm
    from device.server import Server, ServerConfig
    from provisioning.link import connect

    servers = []
    for name in ("auth", "bob"):
        PadStore.init(tmp_path / name, name).close()
        servers.append(Server(ServerConfig(home=tmp_path / name, source=AutoConfirm(tmp_path / name)),
                              "127.0.0.1", 0).start())
    try:
        with PadStore(tmp_path / "auth") as store:
            AbeKeys(store).become_authority()
        clients = []
        for server, name in zip(servers, ("auth", "bob")):
            state = ClientState(tmp_path / f"{name}-laptop")
            pair(server.url, name=f"{name}-laptop", code=(tmp_path / name / "pairing-code").read_text().strip(),
                 state=state)
            clients.append(DeviceClient(server.url, state=state, timeout=60))
        results: dict[str, dict] = {}
        listening = threading.Event()
        port: list[int] = []

        def host() -> None:
            import socket

            with socket.socket() as listener:
                listener.bind(("127.0.0.1", 0))
                listener.listen(1)
                port.append(listener.getsockname()[1])
                listening.set()
                sock, _ = listener.accept()
            results["host"] = carry(clients[0], "host", sock, kind="grant", attributes="STAFF")

        thread = threading.Thread(target=host, daemon=True)
        thread.start()
        assert listening.wait(10)
        results["join"] = carry(clients[1], "join", connect(f"127.0.0.1:{port[0]}", "a grant"), kind="grant")
        thread.join(60)
        assert results["host"]["outcome"] == "issued" and results["join"]["outcome"] == "stored"
        assert results["join"]["attributes"] == ["STAFF"] and results["join"]["authority"] == "auth"
        assert not any("secret" in k or k == "key" for r in results.values() for k in r)
    finally:
        for s in servers:
            s.close()


def test_the_authority_question_is_asked_plainly_on_the_touchscreen():
    from device.touchscreen.testing import Screen, open_app
    from device.ui import ConfirmView, LockState, PinStatus

    view = ConfirmView(request_id=1, contact="attribute authority", kind="authority",
                       text="Make auth an attribute authority?", consumes=0, left_after=0, deadline=1e9, queued=0)
    app = open_app(Console("auth", "touchscreen"), monotonic=lambda: 0.0)
    try:
        screen = Screen(app)
        app.render(Snapshot(device_name="auth", lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                            confirm=view))
        assert screen.frame.screen == "confirm"
        assert screen.texts("title") == ["Confirm"] and screen.texts("recipient") == ["attribute authority"]
        assert screen.shows("Make auth an attribute authority?")
        assert screen.texts("pad") == ["Nothing is encrypted; no pad is used"]
    finally:
        app.close()
