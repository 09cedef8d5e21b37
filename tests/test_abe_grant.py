"""Granting attribute keys in person, over loopback: the pairing ceremony's agreement, both owners confirm."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from device.abe.errors import NotAnAuthority
from device.abe.grant import GrantView, grant_host, grant_join
from device.abe.store import AbeKeys
from device.storage.padstore import PadStore
from provisioning.ceremony import HOST, JOIN, Ceremony
from provisioning.errors import CeremonyAborted, CeremonyRefused
from provisioning.wire import Wire
from tests.conftest import ROOT, otc
from tests.test_provisioning import homes as make_homes


@pytest.fixture
def homes(tmp_path):
    auth, member = make_homes(tmp_path, "campus", "alice")
    with PadStore(auth) as store:
        AbeKeys(store).become_authority()
    return auth, member


class Owners:
    """Two owners side by side; each answers ``answers[role]`` after seeing the view."""

    def __init__(self, answers: dict[str, bool]) -> None:
        self.answers = answers
        self.views: dict[str, GrantView] = {}

    def confirm_for(self, role: str):
        def confirm(view: GrantView) -> bool:
            self.views[role] = view
            return self.answers[role]
        return confirm


def run_sides(host_fn, join_fn):
    """Run host_fn(sock) and join_fn(sock) on two ends of a loopback connection; return results or errors."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    results: dict[str, object] = {}

    def side(role, fn, connect):
        try:
            sock = connect()
            sock.settimeout(30)
            wire = Wire(sock)
            try:
                results[role] = fn(wire)
            finally:
                wire.close()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[role] = exc

    threads = [threading.Thread(target=side, args=(HOST, host_fn, lambda: listener.accept()[0])),
               threading.Thread(target=side, args=(JOIN, join_fn,
                                                   lambda: socket.create_connection(("127.0.0.1", port))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    listener.close()
    return results[HOST], results[JOIN]


def grant(auth: Path, member: Path, attributes: str, owners: Owners):
    def host(wire):
        with PadStore(auth) as store:
            return grant_host(store, wire, attributes, owners.confirm_for(HOST))

    def join(wire):
        with PadStore(member) as store:
            return grant_join(store, wire, owners.confirm_for(JOIN))

    return run_sides(host, join)


def test_grant_in_person_issues_a_key_both_sides_saw(homes):
    auth, member = homes
    owners = Owners({HOST: True, JOIN: True})
    issued, received = grant(auth, member, "Staff,admin", owners)
    assert not isinstance(issued, Exception), issued
    assert not isinstance(received, Exception), received
    assert issued.key_id == received.key_id and received.attributes == ("ADMIN", "STAFF")
    host_view, join_view = owners.views[HOST], owners.views[JOIN]
    assert host_view.sas == join_view.sas and re.fullmatch(r"\d{3}-\d{3}-\d{3}", host_view.sas)
    assert host_view.attributes == join_view.attributes == ("ADMIN", "STAFF")
    assert host_view.fingerprint == join_view.fingerprint and host_view.member == join_view.member == "alice"
    assert any("ADMIN, STAFF" in line for line in join_view.lines())
    with PadStore(auth) as a, PadStore(member) as m:
        (record,) = AbeKeys(a).issued()
        assert (record.member, record.how, record.member_device_id) == ("alice", "in person", m.device_id)
        assert AbeKeys(a).member_keys() == []  # the authority keeps no copy
        sealed = AbeKeys(m).encapsulate("campus", "STAFF and ADMIN")
        assert AbeKeys(m).decapsulate(sealed.ciphertext.encode()) == sealed.key


@pytest.mark.parametrize("declines", [HOST, JOIN])
def test_either_owner_saying_no_issues_nothing(homes, declines):
    auth, member = homes
    owners = Owners({HOST: declines != HOST, JOIN: declines != JOIN})
    issued, received = grant(auth, member, "STAFF", owners)
    assert isinstance(issued, CeremonyAborted) and isinstance(received, CeremonyAborted)
    with PadStore(auth) as a, PadStore(member) as m:
        assert AbeKeys(a).issued() == [] and AbeKeys(m).member_keys() == []


def test_only_an_authority_can_host(tmp_path):
    (plain,) = make_homes(tmp_path, "plain")
    with PadStore(plain) as store, socket.socket() as sock, pytest.raises(NotAnAuthority):
        grant_host(store, Wire(sock), "STAFF", lambda view: True)


def test_a_grant_is_not_a_pad_pairing(homes):
    auth, member = homes

    def host(wire):
        with PadStore(auth) as store:
            return grant_host(store, wire, "STAFF", lambda view: True)

    def join(wire):
        with PadStore(member) as store:
            return Ceremony(store, JOIN, random_bytes=os.urandom, compare=lambda sas: True).run(wire)

    issued, joined = run_sides(host, join)
    assert isinstance(joined, CeremonyRefused) and isinstance(issued, Exception)
    with PadStore(auth) as a:
        assert AbeKeys(a).issued() == []


def test_grant_host_and_join_commands(homes):
    auth, member = homes
    host = subprocess.Popen(
        [sys.executable, "-m", "onetimechat.cli", "abe", "grant", "host", "--home", str(auth), "--listen",
         "127.0.0.1:0", "--attributes", "STAFF,ADMIN", "--confirm", "auto"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        first = host.stdout.readline().decode()
        port = re.search(r"127\.0\.0\.1:(\d+)", first).group(1)
        joined = otc("abe", "grant", "join", "--home", str(member), "--connect", f"127.0.0.1:{port}",
                     "--confirm", "auto", check=True, timeout=120)
        out, err = host.communicate(timeout=120)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == 0, err
    host_out, join_out = first + out.decode(), joined.stdout.decode()
    sas = re.search(r"Pairing string: (\d{3}-\d{3}-\d{3})", host_out).group(1)
    assert f"Pairing string: {sas}" in join_out
    assert "ADMIN, STAFF" in host_out and "ADMIN, STAFF" in join_out
    assert "Stored a key for ADMIN, STAFF" in join_out and "Issued a key for ADMIN, STAFF" in host_out
    sealed = json.loads(otc("abe", "encaps", "--home", str(auth), "--authority", "campus", "--policy", "ADMIN",
                            check=True).stdout)
    result = otc("abe", "decaps", "--home", str(member), input=sealed["ciphertext"].encode(), check=True)
    assert json.loads(result.stdout)["key_fingerprint"] == sealed["key_fingerprint"]


def test_a_grant_leaves_a_renewal_pad_that_carries_the_next_periods_key(homes):
    """Issue 22: the grant also makes a small pad (both shares committed first); the authority renews the key on
    it without meeting; the member opens it once; a forged or replayed renewal changes nothing."""
    import sqlite3

    from device.abe.renewal import PAD_BYTES, RenewalPads, RenewalRefused, plan_renewal, renew
    from device.rooms.service import DeviceRooms
    from onetimechat import package as fmt

    auth, member = homes
    with PadStore(auth) as store:  # the authority's rooms: the member's key satisfies the first one's policy only
        staff, admins = (DeviceRooms(store, None).create(name, policy).room_id  # type: ignore[arg-type]
                         for name, policy in (("staff", "STAFF"), ("admins", "ADMIN")))
    owners = Owners({HOST: True, JOIN: True})
    issued, received = grant(auth, member, "STAFF", owners)
    assert not isinstance(issued, Exception) and not isinstance(received, Exception), (issued, received)
    assert "(period 1, valid until" in owners.views[JOIN].lines()[0]  # both screens show the key's period
    pads = {}
    for home in (auth, member):
        with sqlite3.connect(home / "device.db") as db:
            pads[home] = db.execute("SELECT pad_id, mailbox, pad, size, confirmed, role FROM abe_pads").fetchall()
        db.close()
    (a,), (m,) = pads[auth], pads[member]
    assert a[0] == m[0] and a[1] == m[1] and a[2] == m[2] and a[3] == PAD_BYTES and a[4] == m[4] == 1
    assert (a[5], m[5]) == ("authority", "member") and a[2] != bytes(PAD_BYTES)
    with PadStore(auth) as store:
        keys = AbeKeys(store)
        plan = plan_renewal(keys, end_period=True)
        assert [name for _, name in plan.members] == ["alice"]
        (renewal,) = renew(keys, plan, os.urandom)
    data = fmt.decode(renewal.package)
    with PadStore(member) as store:
        pads_here = RenewalPads(AbeKeys(store))
        assert pads_here.mailboxes() == [renewal.mailbox]
        forged = bytearray(data)
        forged[40] ^= 1
        with pytest.raises(RenewalRefused):
            pads_here.open(bytes(forged))
        assert [k.period for k in AbeKeys(store).held()] == [1]  # nothing changed
        held = pads_here.open(data)
        assert held.period == 2 and held.attributes == ("STAFF",)
        with pytest.raises(RenewalRefused, match="opened already"):
            pads_here.open(data)
        assert sorted(k.period for k in AbeKeys(store).held()) == [1, 2]
        assert {e["event"] for e in store.events(50)} >= {"abe-renewal-forged", "abe-renewal-replay"}
        # Each key came with the period's secret of each room whose policy it satisfies (the grant's over the
        # ceremony, the renewal's on the pad), and of no other room (docs/rooms.md "Period secrets, per room").
        got = {(r, p): AbeKeys(store).room_period_secret(held.authority_id, r, p)
               for r in (staff, admins) for p in (1, 2, 3)}
    with PadStore(auth) as store:
        made = {(r, p): AbeKeys(store).room_period_secret(held.authority_id, r, p)
                for r in (staff, admins) for p in (1, 2, 3)}
    assert got[staff, 1] == made[staff, 1] and got[staff, 2] == made[staff, 2] and made[staff, 1] != made[staff, 2]
    assert got[staff, 3] is None and made[admins, 1] not in (None, made[staff, 1])
    assert [got[admins, p] for p in (1, 2, 3)] == [None] * 3
    # The used bytes are gone on both devices.
    for home in (auth, member):
        with sqlite3.connect(home / "device.db") as db:
            pad, used_to = db.execute("SELECT pad, next FROM abe_pads").fetchone()
        db.close()
        assert used_to == 16 + fmt.segment_length(len(data) - fmt.OVERHEAD)
        assert pad[16:used_to] == bytes(used_to - 16)


def test_a_device_that_chooses_its_pad_share_after_seeing_the_others_is_caught():
    from device.abe.renewal import PAD_BYTES, make_pad
    from provisioning.errors import CeremonyBroken

    left, right = socket.socketpair()
    out: dict = {}
    k1, k2 = os.urandom(32), os.urandom(32)
    honest_wire, cheat = Wire(left), Wire(right)
    honest_wire.set_keys(k1, k2)  # as after the agreement: a sealed link
    cheat.set_keys(k2, k1)

    def honest() -> None:
        try:
            out["honest"] = make_pad(honest_wire, os.urandom)
        except CeremonyBroken as exc:
            out["honest"] = exc

    thread = threading.Thread(target=honest)
    thread.start()
    cheat.send({"t": "pad-commit"}, bytes(32))  # a commitment to nothing it will reveal
    cheat.recv()
    cheat.recv()  # sees the honest share first...
    cheat.send({"t": "pad-share"}, bytes(PAD_BYTES))  # ...then sends one of its choosing
    thread.join(10)
    left.close()
    right.close()
    assert isinstance(out["honest"], CeremonyBroken) and "commitment" in str(out["honest"])


def test_a_device_that_plays_back_the_others_commitment_and_share_is_caught():
    """An outside review: echoing the other side's commitment, then its share, passed every check and made the
    renewal pad all zeros (share XOR share). Commitments now bind the sender's role and the session."""
    from device.abe.renewal import make_pad
    from provisioning.errors import CeremonyBroken

    left, right = socket.socketpair()
    out: dict = {}
    k1, k2 = os.urandom(32), os.urandom(32)
    honest_wire, cheat = Wire(left), Wire(right)
    honest_wire.set_keys(k1, k2)
    cheat.set_keys(k2, k1)

    def honest() -> None:
        try:
            out["honest"] = make_pad(honest_wire, os.urandom, "authority")
        except CeremonyBroken as exc:
            out["honest"] = exc

    thread = threading.Thread(target=honest)
    thread.start()
    _, commitment = cheat.recv()
    cheat.send({"t": "pad-commit"}, commitment)  # the honest side's own commitment, played back
    _, share = cheat.recv()
    cheat.send({"t": "pad-share"}, share)  # and its own share
    thread.join(10)
    left.close()
    right.close()
    assert isinstance(out["honest"], CeremonyBroken), out["honest"]
