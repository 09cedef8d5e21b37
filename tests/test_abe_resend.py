"""A renewal the relay lost is sent again, byte for byte (issue 22, an outside review).

The hostile relay here drops the first package (it is never stored); the authority re-sends with
``otc abe renew --resend``; the member's device opens it. Re-sending uses no pad byte, issues nothing, and
never puts other content over the bytes the first package used.
"""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from client.relay import RelayClient
from device.abe.renewal import RenewalPads, RenewalRefused
from device.abe.store import AbeKeys
from device.storage.padstore import PadStore
from onetimechat import package as fmt
from onetimechat.cli import main
from provisioning.ceremony import HOST, JOIN
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.test_abe_grant import Owners, grant, homes  # noqa: F401 - the fixture


def _authority_state(auth) -> tuple:
    with sqlite3.connect(auth / "device.db") as db:
        pad = db.execute("SELECT pad, next FROM abe_pads").fetchone()
        issued = db.execute("SELECT COUNT(*) FROM abe_issued").fetchone()[0]
    db.close()
    return bytes(pad[0]), pad[1], issued


def test_a_renewal_the_relay_dropped_is_sent_again_as_it_was_and_opens(homes, tmp_path, capsys):  # noqa: F811
    auth, member = homes
    issued, received = grant(auth, member, "STAFF", Owners({HOST: True, JOIN: True}))
    assert not isinstance(issued, Exception) and not isinstance(received, Exception), (issued, received)
    server = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}")), "127.0.0.1", 0,
                         threads=4).start()
    try:
        capsys.readouterr()
        # The renewal goes out; the hostile relay drops it (nothing is stored: here, it is never posted).
        assert main(["abe", "renew", "--home", str(auth), "--end-period"]) == 0
        (line,) = capsys.readouterr().out.strip().splitlines()
        first = json.loads(line)
        after_renew = _authority_state(auth)
        relay = RelayClient(server.url)
        assert relay.receive({first["mailbox"]: 0})[0] == []
        # Re-sent: the same bytes, no pad byte used, nothing issued; twice over, still the same.
        for _ in range(2):
            assert main(["abe", "renew", "--home", str(auth), "--resend", "--relay", server.url]) == 0
            assert "Re-sent 1 renewal: alice" in capsys.readouterr().out
            assert _authority_state(auth) == after_renew
        stored, _ = relay.receive({first["mailbox"]: 0})
        assert [m.contents for m in stored] == [first["package"]] * 2
        with PadStore(member) as store:
            pads = RenewalPads(AbeKeys(store))
            held = pads.open(fmt.decode(stored[0].contents))
            assert held.period == 2
            with pytest.raises(RenewalRefused, match="opened already"):
                pads.open(fmt.decode(stored[1].contents))
        # Once its period is over, nothing is kept to re-send.
        with PadStore(auth) as store:
            assert RenewalPads(AbeKeys(store)).resend(now=held_end(store)) == []
            assert RenewalPads(AbeKeys(store)).resend() == []
    finally:
        server.close()


def held_end(store: PadStore) -> float:
    return max(p.ends for p in AbeKeys(store).periods())


def test_a_revoked_members_kept_renewal_is_not_sent_again(homes):  # noqa: F811
    from device.abe.renewal import plan_renewal, renew

    auth, member = homes
    issued, received = grant(auth, member, "STAFF", Owners({HOST: True, JOIN: True}))
    assert not isinstance(issued, Exception)
    with PadStore(auth) as store:
        keys = AbeKeys(store)
        (sent,) = renew(keys, plan_renewal(keys), os.urandom)
        assert [r.package for r in RenewalPads(keys).resend("alice")] == [sent.package]
        keys.revoke("alice")
        assert RenewalPads(keys).resend() == []
