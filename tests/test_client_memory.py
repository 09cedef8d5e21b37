"""The laptop remembers (issue 18): after `otc client pair`, --device and --relay are optional."""

from __future__ import annotations

import json

import pytest

from tests.chat_fixtures import make_world
from tests.conftest import otc
from tests.test_rpc_cli import Serving


def client(home, *args: str, check: bool = True, input: bytes | None = None):
    return otc(*args, env={"OTC_CLIENT_HOME": str(home)}, check=check, input=input, timeout=120)


@pytest.fixture
def served(tmp_path):
    homes = []
    for name in ("alice", "work"):
        otc("device", "init", "--home", str(tmp_path / name), "--name", name, check=True)
        homes.append(tmp_path / name)
    servers = [Serving(home, "127.0.0.1:0", "auto") for home in homes]
    yield list(zip(homes, servers))
    for s in servers:
        s.stop()


def code(home) -> str:
    return (home / "pairing-code").read_text().strip()


def test_one_device_is_remembered_and_named_any_way(served, tmp_path):
    (home, server), _ = served
    laptop = tmp_path / "laptop"
    assert "none yet" in client(laptop, "client").stdout.decode()
    port = server.url.rsplit(":", 1)[1]
    # Paired as localhost without a scheme; used as 127.0.0.1 with one, by name, or not named at all.
    client(laptop, "client", "pair", "--device", f"localhost:{port}", "--code", code(home))
    shown = client(laptop, "client").stdout.decode()
    assert f"alice            http://127.0.0.1:{port}" in shown and "in use" in shown
    for device in ([], ["--device", "alice"], ["--device", f"http://127.0.0.1:{port}/"],
                   ["--device", f"HTTP://LOCALHOST:{port}"]):
        status = json.loads(client(laptop, "client", "status", *device, "--json").stdout)
        assert status["device"]["name"] == "alice"


def test_several_devices_are_chosen_by_name(served, tmp_path):
    laptop = tmp_path / "laptop"
    for home, server in served:
        client(laptop, "client", "pair", "--device", server.url, "--code", code(home))
    # The first paired stays in use until another is chosen.
    assert json.loads(client(laptop, "client", "status", "--json").stdout)["device"]["name"] == "alice"
    assert json.loads(client(laptop, "client", "status", "--device", "work", "--json").stdout)["device"]["name"] \
        == "work"
    client(laptop, "client", "use", "work")
    assert json.loads(client(laptop, "client", "status", "--json").stdout)["device"]["name"] == "work"
    shown = json.loads(client(laptop, "client", "show", "--json").stdout)
    assert [(d["name"], d["in_use"]) for d in shown["devices"]] == [("alice", False), ("work", True)]
    unknown = client(laptop, "client", "status", "--device", "carol", check=False)
    assert unknown.returncode == 1 and b"No paired device is named 'carol'" in unknown.stderr


def test_no_device_paired_is_one_clear_line(tmp_path):
    result = client(tmp_path / "laptop", "send", "bob", "hi", check=False)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == ("ERROR: This laptop is paired with no device yet: run `otc client pair "
                                              "--device URL` (the URL the device's screen shows).")


def test_send_and_recv_without_device_or_relay(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        alice, bob = world.people["alice"].laptop, world.people["bob"].laptop
        # One command with --relay: remembered for the next ones.
        client(alice, "send", "--relay", world.relay_url, "bob", "first, with the relay named")
        client(alice, "send", "bob", "hi")
        got = client(bob, "recv", "--relay", world.relay_url, "--wait", "10", "--json").stdout.decode()
        texts = [json.loads(line)["text"] for line in got.splitlines() if json.loads(line)["kind"] == "text"]
        assert texts == ["first, with the relay named", "hi"]
        assert world.relay_url in client(alice, "client").stdout.decode()
        client(bob, "send", "alice", "and back, with nothing named")
        got = client(alice, "recv", "--wait", "10", "--json").stdout.decode()
        assert "and back, with nothing named" in got
    finally:
        world.close()


def test_otc_alone_prints_help():
    result = otc(check=True)
    out = result.stdout.decode()
    assert out.startswith("usage: otc") and "OTC_CLIENT_HOME" in out


@pytest.mark.parametrize("relay", ["not a url", "ftp://relay:1", "http://", "relay host:80", "http://h:99999"])
def test_a_relay_that_is_no_url_is_refused_and_not_remembered(tmp_path, relay):
    result = client(tmp_path / "laptop", "recv", "--device", "http://127.0.0.1:9", "--relay", relay, check=False)
    err = result.stderr.decode()
    assert result.returncode != 0 and len(err.splitlines()) == 1
    assert "not paired" in err or "A relay URL looks like" in err
    from client.state import ClientState

    state = ClientState(tmp_path / "laptop")
    with pytest.raises(Exception, match="A relay URL looks like"):
        state.resolve_relay(relay)
    assert "relay" not in state.config()


def test_device_side_commands_use_the_remembered_device(served, tmp_path):
    """`otc abe status`, `otc pair host|join` and `otc room create` take --home on the device or --device from
    the laptop; on a laptop with neither flag they use the device it remembers."""
    (home, server), _ = served
    laptop = tmp_path / "laptop"
    client(laptop, "client", "pair", "--device", server.url, "--code", code(home))
    out = client(laptop, "abe", "status").stdout.decode()
    named = client(laptop, "abe", "status", "--device", "alice").stdout.decode()
    assert out == named and out.strip()
    nothing = client(tmp_path / "empty-laptop", "abe", "status", check=False)
    assert nothing.returncode == 2 and b"Give --home DIR (on the device) or --device NAME|URL" in nothing.stderr
