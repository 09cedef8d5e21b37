"""`otc abe ...` as a user runs it, and keys at rest in the device store."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import time

import pytest

from device.abe.store import AbeKeys
from device.home import open_home
from device.storage.padstore import PadStore
from tests.conftest import ROOT, otc
from tests.test_cli import one_line_error

PIN = "493817"


@pytest.fixture
def homes(tmp_path):
    """An authority 'campus' with a key for STAFF,ADMIN issued to 'alice'; 'bob' holds nothing."""
    auth, alice, bob = tmp_path / "campus", tmp_path / "alice", tmp_path / "bob"
    for home in (auth, alice, bob):
        otc("device", "init", "--home", str(home), "--name", home.name, check=True)
    out = otc("abe", "authority", "--home", str(auth), check=True).stdout.decode()
    assert "campus is now an attribute authority" in out
    out = otc("abe", "grant-local", "--attributes", "staff, Admin", str(auth), str(alice), check=True).stdout.decode()
    assert "ADMIN, STAFF" in out and "alice" in out
    return auth, alice, bob


def encaps(home, policy: str, authority: str = "campus") -> dict:
    result = otc("abe", "encaps", "--home", str(home), "--authority", authority, "--policy", policy, check=True)
    return json.loads(result.stdout)


def decaps(home, data: str):
    return otc("abe", "decaps", "--home", str(home), input=data.encode())


def test_encaps_then_decaps_agree_on_the_key(homes):
    auth, alice, bob = homes
    sealed = encaps(auth, "STAFF and (ADMIN or 2 of (X, Y, Z))")
    assert set(sealed) == {"ciphertext", "key_fingerprint"}
    assert base64.b64decode(sealed["ciphertext"], validate=True).startswith(b"OABE\x01\x04")
    assert len(sealed["key_fingerprint"]) == 32 and int(sealed["key_fingerprint"], 16) >= 0
    result = decaps(alice, sealed["ciphertext"] + "\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"key_fingerprint": sealed["key_fingerprint"]}
    # The JSON that encaps prints pipes straight in, too; and a member can encapsulate.
    again = encaps(alice, "ADMIN")
    assert json.loads(decaps(alice, json.dumps(again)).stdout)["key_fingerprint"] == again["key_fingerprint"]


@pytest.mark.parametrize(("who", "policy"), [("alice", "STAFF and X"), ("bob", "STAFF")])
def test_refused_decaps_is_one_line(homes, who, policy):
    auth, alice, bob = homes
    sealed = encaps(auth, policy)
    line = one_line_error(decaps(alice if who == "alice" else bob, sealed["ciphertext"]))
    assert "no key whose attributes satisfy" in line
    assert sealed["key_fingerprint"] not in line


def test_tampered_and_garbage_ciphertexts_are_one_line_errors(homes):
    auth, alice, _ = homes
    raw = bytearray(base64.b64decode(encaps(auth, "STAFF or X")["ciphertext"]))
    raw[-20] ^= 0x40  # inside the last row's D
    line = one_line_error(decaps(alice, base64.b64encode(bytes(raw)).decode()))
    assert "malformed" in line or "refused" in line
    raw = bytearray(base64.b64decode(encaps(auth, "STAFF or X")["ciphertext"]))
    raw[-1] ^= 0x01  # the tag
    assert "refused" in one_line_error(decaps(alice, base64.b64encode(bytes(raw)).decode()))
    for junk in ("", "not base64!", base64.b64encode(b"OABE\x01\x04short").decode(), '{"ciphertext": 5}'):
        one_line_error(decaps(alice, junk))


def test_policy_errors_name_their_position(homes):
    auth, _, _ = homes
    result = otc("abe", "encaps", "--home", str(auth), "--authority", "campus", "--policy", "STAFF and X or Y")
    assert "Policy error at character 13" in one_line_error(result)
    result = otc("abe", "encaps", "--home", str(auth), "--authority", "campus", "--policy", "2 of (A, B")
    assert "at character 11" in one_line_error(result)


def test_other_refusals(homes, tmp_path):
    auth, alice, bob = homes
    assert "no attribute authority named 'nobody'" in one_line_error(
        otc("abe", "encaps", "--home", str(alice), "--authority", "nobody", "--policy", "A"))
    assert "not an attribute authority" in one_line_error(
        otc("abe", "grant-local", "--attributes", "A", str(alice), str(bob)))
    assert "already an attribute authority" in one_line_error(otc("abe", "authority", "--home", str(auth)))
    assert "Policy error" in one_line_error(otc("abe", "grant-local", "--attributes", "A,B-C", str(auth), str(bob)))
    assert "two different devices" in one_line_error(otc("abe", "grant-local", "--attributes", "A", str(auth),
                                                         str(auth)))
    # A second authority called "campus" cannot hand alice a key: names must not be ambiguous.
    other = tmp_path / "x" / "campus"
    otc("device", "init", "--home", str(other), "--name", "campus", check=True)
    otc("abe", "authority", "--home", str(other), check=True)
    assert "another attribute authority named 'campus'" in one_line_error(
        otc("abe", "grant-local", "--attributes", "A", str(other), str(alice)))


def test_status_lists_what_was_issued_and_held(homes):
    auth, alice, _ = homes
    status = json.loads(otc("abe", "status", "--home", str(auth), "--json", check=True).stdout)
    assert [a["own"] for a in status["authorities"]] == [True]
    (issued,) = status["issued"]
    assert issued["member"] == "alice" and issued["attributes"] == ["ADMIN", "STAFF"] and issued["how"] == "local"
    held = json.loads(otc("abe", "status", "--home", str(alice), "--json", check=True).stdout)
    assert held["authorities"][0]["keys"] == [["ADMIN", "STAFF"]] and held["issued"] == []
    assert held["authorities"][0]["fingerprint"] == status["authorities"][0]["fingerprint"]
    text = otc("abe", "status", "--home", str(auth), check=True).stdout.decode()
    assert "alice" in text and "ADMIN, STAFF" in text


def test_keys_are_sealed_at_rest_in_a_pin_locked_home(tmp_path):
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    auth, alice = tmp_path / "campus", tmp_path / "alice"
    for home in (auth, alice):
        otc("device", "init", "--home", str(home), "--name", home.name, "--pin-file", str(pin), check=True)
    assert "PIN-locked" in one_line_error(otc("abe", "authority", "--home", str(auth)))
    otc("abe", "authority", "--home", str(auth), "--pin-file", str(pin), check=True)
    otc("abe", "grant-local", "--attributes", "STAFF", str(auth), str(alice), "--auth-pin-file", str(pin),
        "--member-pin-file", str(pin), check=True)
    sealed = json.loads(otc("abe", "encaps", "--home", str(alice), "--pin-file", str(pin), "--authority", "campus",
                            "--policy", "STAFF", check=True).stdout)
    result = otc("abe", "decaps", "--home", str(alice), "--pin-file", str(pin), input=sealed["ciphertext"].encode())
    assert json.loads(result.stdout)["key_fingerprint"] == sealed["key_fingerprint"]
    # The rows are sealed under the storage key, inside a database sealed whole (docs/pin-lock.md).
    with open_home(auth, pin) as store:
        master = AbeKeys(store).master()
        ((stored_master,),) = store._read("SELECT master_key FROM abe_authorities")
    with open_home(alice, pin) as store:
        (key,) = AbeKeys(store).member_keys()
        ((stored_key,),) = store._read("SELECT secret FROM abe_keys")
    for home in (auth, alice):
        with pytest.raises(sqlite3.DatabaseError):
            sqlite3.connect(home / "device.db").execute("SELECT 1 FROM abe_keys").fetchone()
    assert master.alpha.to_bytes(32, "big") not in stored_master and master.a.to_bytes(32, "big") not in stored_master
    assert bytes(key.K.to_compressed_bytes()) not in stored_key and bytes(key.L.to_compressed_bytes()) not in stored_key


def test_help_for_every_subcommand():
    for args in (("abe",), ("abe", "grant"), ("abe", "grant", "host"), ("abe", "grant", "join"), ("abe", "encaps"),
                 ("abe", "decaps"), ("abe", "authority"), ("abe", "grant-local"), ("abe", "status")):
        result = subprocess.run([sys.executable, "-m", "onetimechat.cli", *args, "--help"], capture_output=True,
                                cwd=ROOT, timeout=60)
        assert result.returncode == 0 and b"usage:" in result.stdout


def test_periods_members_and_revocation_at_the_command_line(homes, tmp_path):
    """Issue 22: a key is for a period; the authority lists what it issued and revokes; the member's device says
    when its key ends and warns in time."""
    auth, alice, bob = homes
    out = otc("abe", "grant-local", "--attributes", "OPS", "--period", "2w", str(auth), str(bob),
              check=True).stdout.decode()
    assert "period 1 until" in out  # the period the first grant began (30 days) runs on: bob's key is for it
    listed = json.loads(otc("abe", "members", "--home", str(auth), "--json", check=True).stdout)
    assert [(i["member"], i["attributes"], i["period"], i["revoked"]) for i in listed["issued"]] == [
        ("alice", ["ADMIN", "STAFF"], 1, None), ("bob", ["OPS"], 1, None)]
    assert len(listed["periods"]) == 1 and listed["periods"][0]["period"] == 1
    out = otc("abe", "revoke", "--home", str(auth), "bob", check=True).stdout.decode()
    assert out.startswith("Revoked 1 key of bob: no renewal from now on.")
    shown = otc("abe", "members", "--home", str(auth), check=True).stdout.decode().splitlines()
    assert "REVOKED" in shown[1] and "renewable" in shown[0] and "period 1 until" in shown[0]
    again = otc("abe", "revoke", "--home", str(auth), "bob")
    assert "already revoked" in one_line_error(again)
    assert "issued no key" in one_line_error(otc("abe", "revoke", "--home", str(auth), "nobody"))
    assert "reserved" in one_line_error(otc("abe", "grant-local", "--attributes", "PERIOD_7", str(auth), str(bob)))
    bad = otc("abe", "grant-local", "--attributes", "OPS", "--period", "forever", str(auth), str(bob))
    assert bad.returncode != 0 and "30d" in bad.stderr.decode() and "Traceback" not in bad.stderr.decode()
    # The member's device shows its key's period and warns once renewal is due (here: the last week).
    status = json.loads(otc("abe", "status", "--home", str(alice), "--json", check=True).stdout)
    (held,) = status["held"]
    assert held["period"] == 1 and held["state"] == "valid" and status["warnings"] == []
    with open_home(alice, None) as store:
        with store._transaction() as conn:
            conn.execute("UPDATE abe_keys SET starts = ?, ends = ?", (time.time() - 29 * 86400, time.time() + 3600))
    out = otc("abe", "status", "--home", str(alice), check=True).stdout.decode()
    assert "renewal due" in out and "WARNING: the key from campus for ADMIN, STAFF (period 1) expires at" in out
    device = json.loads(otc("device", "status", "--home", str(alice), "--json", check=True).stdout)
    assert any(w.startswith("abe-key-period: the key from campus") for w in device["warnings"])


def test_renewal_over_the_pad_at_the_command_line(homes, tmp_path):
    """`otc abe renew --home` on the authority, `otc abe renewals --home` on the member, through a relay."""
    from relay.app import create_app
    from relay.config import RelayConfig
    from relay.server import RelayServer

    auth, alice, bob = homes
    otc("abe", "grant-local", "--attributes", "OPS", str(auth), str(bob), check=True)
    otc("abe", "revoke", "--home", str(auth), "bob", check=True)
    server = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}")), "127.0.0.1", 0,
                         threads=4).start()
    try:
        out = otc("abe", "renew", "--home", str(auth), "--relay", server.url, check=True).stdout.decode()
        assert "Renewed 1 member for period 2" in out and ": alice" in out and "Not renewed: bob: revoked" in out
        assert "bob" in one_line_error(otc("abe", "renew", "--home", str(auth), "bob", "--relay", server.url))
        got = otc("abe", "renewals", "--home", str(alice), "--relay", server.url, check=True).stdout.decode()
        assert "Stored a renewed key for ADMIN, STAFF from authority campus (period 2" in got
        # Opened, the package is deleted from the relay: the next read does not replay it to the device.
        assert "No new renewal." in otc("abe", "renewals", "--home", str(alice), "--relay", server.url,
                                        check=True).stdout.decode()
        with PadStore(alice) as a:
            assert not [e for e in a.events(200) if e["event"] == "abe-renewal-replay"]
        status = json.loads(otc("abe", "status", "--home", str(alice), "--json", check=True).stdout)
        assert [(k["period"], k["state"]) for k in status["held"]] == [(1, "valid"), (2, "future")]
        assert "No new renewal." in otc("abe", "renewals", "--home", str(bob), "--relay", server.url,
                                        check=True).stdout.decode()
        # Without a relay, the renewals are printed for the owner to carry (none left to send here).
        printed = otc("abe", "renew", "--home", str(auth), check=True)
        assert printed.stdout == b"" and "Renewed 0 members for period 2" in printed.stderr.decode()
    finally:
        server.close()


@pytest.mark.parametrize("text", ["1m", "90m", "12h", "11d", "12d", "30d", "2w", "400d", "34560000s"])
def test_a_period_crosses_the_rpc_as_seconds(text):
    """The laptop sends a period as seconds; the device takes every length the command line takes (30d too)."""
    from device.abe.periods import check_period, parse_duration

    seconds = parse_duration(text)
    assert check_period(seconds) == seconds == parse_duration(f"{int(seconds)}s")


@pytest.mark.parametrize("seconds", [59, 400 * 86400 + 1, 10**30])
def test_a_period_out_of_range_is_refused(seconds):
    from device.abe.errors import BadPeriod
    from device.abe.periods import check_period

    with pytest.raises(BadPeriod, match="from a minute to 400 days"):
        check_period(seconds)


def test_the_confirm_hint_shows_only_while_the_device_takes_its_time(capsys, monkeypatch):
    """`otc abe authority|renew|revoke --device` say "Confirm on the device's screen." only once the answer takes
    longer than a refusal (a cold run saw the hint before refusals the device gave at once, without asking)."""
    import time

    from onetimechat.cli import abe

    class Refusing:
        def call(self, method, **params):
            raise ValueError("refused at once")

    class Asking:
        def call(self, method, **params):
            time.sleep(2)  # the owner reads the screen
            return {"ok": method}

    monkeypatch.setattr(abe, "CONFIRM_HINT_S", 30.0)
    with pytest.raises(ValueError):
        abe._asking(Refusing(), "abe_revoke", member="nobody")
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(abe, "CONFIRM_HINT_S", 0.0)
    assert abe._asking(Asking(), "abe_renew") == {"ok": "abe_renew"}
    assert capsys.readouterr().out == "Confirm on the device's screen.\n"
