"""`otc relay serve` as an operator runs it: a real process, stopped by signals."""

from __future__ import annotations

import socket

import pytest
import requests

from relay.storage.schema import LATEST
from tests.conftest import otc
from tests.relay_fixtures import (  # noqa: F401 - fixtures
    RelayProcess,
    db_url_fixture,
    postgres_fixture,
)


def one_line_error(result) -> str:
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), result.stderr.decode()
    assert result.stdout == b""
    return lines[0]


def test_relay_commands_have_help():
    result = otc("relay", "--help", check=True)
    assert b"serve" in result.stdout
    result = otc("relay", "serve", "--help", check=True)
    for flag in (b"--listen", b"--db", b"--rate-limit", b"--expire-days", b"--max-message"):
        assert flag in result.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["--listen", "8080"], "HOST:PORT"),
    (["--listen", "127.0.0.1:70000"], "HOST:PORT"),
    (["--listen", "relay.example:8080"], "literal IP address"),
    (["--listen", "127.0.0.1:0", "--db", "mysql://somewhere/db"], "Unknown store URL scheme"),
    (["--listen", "127.0.0.1:0", "--db", "sqlite://relative.db"], "SQLite URL"),
    (["--listen", "127.0.0.1:0", "--max-message", "lots"], "not a size"),
    # A send over the writer's frame bound cut its worker off from the writer for good (red team relay-s31 R4).
    (["--listen", "127.0.0.1:0", "--writer", "--max-message", "100M"], "add --no-writer"),
])
def test_bad_arguments_are_one_line_errors(args, says, tmp_path):
    result = otc("relay", "serve", *args, env={"XDG_DATA_HOME": str(tmp_path)})
    assert says in one_line_error(result)
    assert result.returncode == 2


def test_serve_says_where_its_default_store_is_and_stops_on_sigterm(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    relay = RelayProcess("", log=tmp_path / "relay.log")
    # "--db ''" is the default: the user data directory.
    relay.start()
    try:
        expected = tmp_path / "data" / "onetimechat" / "relay" / "relay.db"
        assert f"storage SQLite file {expected} (schema v{LATEST}, new)" in relay.banner[0]
        assert expected.exists()
        response = requests.post(relay.url + "/send", data={"recipient_uid": "bob", "sender_uid": "alice",
                                                            "contents": "hi"}, timeout=30)
        assert response.json() == {"received": True, "ref": 1}
    finally:
        assert relay.stop() == 0
    assert "otc relay: stopped" in relay.rest_of_stdout()


def test_serve_keeps_messages_across_restarts(db_url, tmp_path):
    relay = RelayProcess(db_url, log=tmp_path / "relay.log").start()
    try:
        with requests.Session() as http:
            refs = [http.post(relay.url + "/v1/send", json={"mailbox": "m", "contents": f"c{n}"}, timeout=30)
                    .json()["ref"] for n in range(3)]
        assert refs == [1, 2, 3]
    finally:
        relay.kill()  # no clean shutdown: every answered ref must already be on disk
    relay.start()
    try:
        assert f"(schema v{LATEST}, existing)" in relay.banner[0]
        with requests.Session() as http:
            got = http.post(relay.url + "/v1/receive", json={"mailboxes": {"m": 0}}, timeout=30).json()
        assert [(m["ref"], m["contents"]) for m in got["messages"]] == [(1, "c0"), (2, "c1"), (3, "c2")]
    finally:
        assert relay.stop() == 0


def test_a_taken_port_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = otc("relay", "serve", "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "r.db"))
    assert "Cannot listen on" in one_line_error(result)
