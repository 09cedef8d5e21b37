"""The first hour's mistakes (issue 18): each a one-line error and a non-zero exit, never "internal error"."""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import otc


def one_line(result) -> str:
    assert result.returncode not in (0, 70), result
    err = result.stderr.decode()
    errors = [ln for ln in err.splitlines() if ln.startswith("ERROR: ")]
    assert len(errors) == 1, err
    assert "internal error" not in err and "Traceback" not in err, err
    return errors[0]


@pytest.fixture
def home(tmp_path):
    otc("device", "init", "--home", str(tmp_path / "alice"), "--name", "alice", check=True)
    return tmp_path / "alice"


@pytest.fixture
def taken():
    """A port another program listens on."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_device_port_in_use(home, taken):
    result = otc("device", "serve", "--home", str(home), "--listen", taken, "--confirm", "auto", timeout=30)
    assert not (home / "pairing-code").exists()  # no code left for a script to pair with whatever listens there
    assert one_line(result) == f"ERROR: Cannot listen on {taken}: another program already listens there " \
                               "(choose another port, or stop it)."


def test_ceremony_port_in_use(home, taken):
    for args in (["pair", "host", "--home", str(home), "--size", "64K"],
                 ["abe", "grant", "host", "--home", str(home), "--attributes", "A"]):
        if args[0] == "abe":
            otc("abe", "authority", "--home", str(home), check=True)
        result = otc(*args, "--listen", taken, "--confirm", "auto", timeout=30)
        assert "another program already listens there" in one_line(result)


def test_relay_port_in_use(tmp_path, taken):
    result = otc("relay", "serve", "--listen", taken, "--db", f"sqlite:///{tmp_path}/r.db", timeout=30)
    assert "another program already listens there" in one_line(result)


# 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
@pytest.mark.parametrize("args", [
    ["device", "serve", "--confirm", "auto"],
    ["pair", "host", "--size", "64K", "--confirm", "auto"],
])
def test_an_address_not_on_this_machine(home, args):
    result = otc(*args[:2], "--home", str(home), *args[2:], "--listen", "192.0.2.7:7000", timeout=30)
    assert one_line(result) == "ERROR: Cannot listen on 192.0.2.7:7000: that address is not one of this machine's."


def test_a_home_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("not a folder")
    result = otc("device", "init", "--home", str(tmp_path / "f"), "--name", "x")
    assert "is a file, not a folder" in one_line(result)
    result = otc("device", "init", "--home", str(tmp_path / "f" / "sub"), "--name", "x")
    assert "Cannot make the device home" in one_line(result)


@pytest.mark.parametrize("size", ["0", "2T", "100"])
def test_a_bad_size_is_refused_before_waiting_for_a_joiner(home, size):
    started = time.monotonic()
    result = otc("pair", "host", "--home", str(home), "--listen", "127.0.0.1:0", "--size", size, "--confirm", "auto",
                 timeout=30)
    assert "between 256 bytes and 1 TiB" in one_line(result)
    assert b"waiting for the other device" not in result.stdout
    assert time.monotonic() - started < 30


def test_join_says_it_is_connecting_and_keeps_trying(home):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # a port that was free a moment ago; nothing listens once closed
    result = otc("pair", "join", "--home", str(home), "--connect", f"127.0.0.1:{port}", "--confirm", "auto",
                 "--wait", "5", timeout=60)
    err = result.stderr.decode()
    assert err.startswith(f"otc: connecting to 127.0.0.1:{port} for a pairing")
    assert "still trying" in err
    assert "No device hosts a pairing" in one_line(result) and "tried for 5 s" in one_line(result)


def test_chat_without_a_terminal(tmp_path):
    result = otc("chat", "--device", "http://127.0.0.1:1", "--relay", "http://127.0.0.1:2", new_session=True)
    assert one_line(result) == "ERROR: otc chat needs a terminal to type in; in scripts use otc send and otc recv."


def test_an_empty_message_is_refused_before_the_device_is_asked(tmp_path):
    for text, given in (("", None), ("   ", None), ("-", b"\n"), ("-", b"")):
        result = otc("send", "--device", "http://127.0.0.1:1", "--relay", "http://127.0.0.1:2", "bob", text,
                     input=given, env={"OTC_CLIENT_HOME": str(tmp_path / "laptop")})
        assert one_line(result) == "ERROR: An empty message is not sent: give some text (or - to read it from stdin)."
        assert result.returncode == 2


def test_every_positional_argument_has_help():
    import argparse

    from onetimechat.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])
            elif not action.option_strings and not action.help:
                yield " ".join(path), action.dest

    assert list(walk(build_parser(), ["otc"])) == []


@pytest.mark.parametrize("line, expected", [
    ("otc pa", {"pad", "pair"}),
    ("otc client ", {"pair", "status", "log", "clients", "revoke", "show", "use"}),
    ("otc outbox ", {"list", "retry", "drop"}),
])
def test_shell_completion(tmp_path, line, expected):
    out = tmp_path / "completions"
    result = otc(env={"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
                      "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"})
    assert result.returncode == 0
    assert expected <= set(out.read_text().split("\n"))
