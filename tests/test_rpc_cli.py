"""`otc device serve` and `otc client ...` as real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pexpect
import pytest

from client.errors import RemoteError
from client.rpc import DeviceClient, pair
from client.state import ClientState
from tests.conftest import ROOT, make_pair, otc


class Serving:
    """`otc device serve` in a subprocess; its first line says where it serves."""

    def __init__(self, home: Path, listen: str, confirm: str = "auto", *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onetimechat.cli", "device", "serve", "--home", str(home), "--listen", listen,
             "--confirm", confirm, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
        )
        self.first_line = self.proc.stdout.readline()
        match = re.search(r"serving on (http://\S+) \(confirm mode: (\w+)", self.first_line)
        if not match:
            self.stop()
            raise AssertionError(f"serve did not start: {self.first_line!r} {self.proc.stderr.read()}")
        self.url, self.mode = match.group(1), match.group(2)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        return err


@pytest.fixture
def homes(tmp_path):
    home_a, home_b, pad_id = make_pair(tmp_path)
    return home_a, home_b


def test_serve_binds_only_the_given_address_and_states_its_mode(homes, tmp_path):
    home_a, _ = homes
    serving = Serving(home_a, "127.0.0.2:0")
    try:
        assert serving.mode == "auto"
        port = int(serving.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.2", port), timeout=5):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        err = serving.stop()
    assert "'auto'" in err  # auto mode is announced
    assert serving.proc.returncode == 0


@pytest.mark.parametrize("listen", ["0.0.0.0:8470", "[::]:8470", "localhost:8470", "8470", "127.0.0.1:99999"])
def test_serve_refuses_anything_but_one_literal_address(homes, listen):
    home_a, _ = homes
    result = otc("device", "serve", "--home", str(home_a), "--listen", listen, "--confirm", "auto", timeout=20)
    assert result.returncode != 0
    lines = result.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("ERROR: ") and "Traceback" not in result.stderr.decode()


def test_client_commands_against_a_real_server(homes, tmp_path):
    home_a, home_b = homes
    serving = Serving(home_a, "127.0.0.1:0")
    env = {"OTC_CLIENT_HOME": str(tmp_path / "laptop")}
    try:
        code = (home_a / "pairing-code").read_text().strip()  # auto mode shows the code there
        result = otc("client", "pair", "--device", serving.url, "--code", code, "--name", "laptop", env=env)
        assert result.returncode == 0, result.stderr
        assert "Paired this laptop (laptop) with device alice" in result.stdout.decode()
        status = json.loads(otc("client", "status", "--device", serving.url, "--json", env=env, check=True).stdout)
        assert status["confirm"]["mode"] == "auto"
        assert status["contacts"][0]["name"] == "bob"
        listed = otc("client", "clients", "--device", serving.url, env=env, check=True).stdout.decode()
        assert "laptop" in listed and "(this laptop)" in listed
        log = otc("client", "log", "--device", serving.url, env=env, check=True).stdout.decode()
        assert "client-paired" in log
        wrong = otc("client", "pair", "--device", serving.url, "--code", "1", env=env)
        assert wrong.returncode != 0 and wrong.stderr.decode().startswith("ERROR: ")
        nowhere = otc("client", "status", "--device", "http://127.0.0.1:9", env=env)
        assert nowhere.returncode != 0 and "not paired" in nowhere.stderr.decode()
    finally:
        serving.stop()
    gone = otc("client", "status", "--device", serving.url, env=env)
    assert gone.returncode != 0 and "does not answer" in gone.stderr.decode()
    assert len(gone.stderr.decode().strip().splitlines()) == 1


def test_tty_confirmation_end_to_end(homes, tmp_path):
    """The device in a real pseudo-terminal; its owner answers the prompt there."""
    home_a, _ = homes
    child = pexpect.spawn(
        sys.executable, ["-m", "onetimechat.cli", "device", "serve", "--home", str(home_a),
                         "--listen", "127.0.0.1:0", "--confirm", "tty", "--confirm-timeout", "30"],
        cwd=str(ROOT), timeout=30, encoding="utf-8", env={**os.environ},
    )
    try:
        child.expect(r"serving on (http://\S+) \(confirm mode: tty")
        url = child.match.group(1)
        state = ClientState(tmp_path / "laptop")
        # The code appears on the device's terminal; the owner reads it and types it on the laptop.
        shown: list[str] = []
        ready = threading.Event()

        def type_code() -> str:
            ready.wait(30)
            return shown[0]

        t = threading.Thread(target=pair, args=(url,), kwargs={"name": "laptop", "ask_code": type_code,
                                                              "state": state})
        t.start()
        child.expect(r"Pairing code: (\d{4}-\d{4})")
        shown.append(child.match.group(1))
        ready.set()
        t.join(30)
        client = DeviceClient(url, state=state, timeout=60)

        results: list = []
        t = threading.Thread(target=lambda: results.append(client.package("bob", "tty says hi")))
        t.start()
        child.expect("Encrypt this text message to bob")
        child.expect("tty says hi")
        child.expect(r"It uses 27 pad bytes; (\d+) will be left")
        child.expect(r"Approve\? \[y/N\]")
        child.sendline("y")
        t.join(30)
        assert results and results[0]["consumed"] == 27

        errors: list = []

        def declined() -> None:
            try:
                client.package("bob", "not this")
            except RemoteError as exc:
                errors.append(exc.code)

        t = threading.Thread(target=declined)
        t.start()
        child.expect(r"Approve\? \[y/N\]")
        child.sendline("n")
        t.join(30)
        assert errors == ["declined"]
        assert client.status()["contacts"][0]["send"]["used"] == 27
    finally:
        child.kill(signal.SIGTERM)
        child.close()
