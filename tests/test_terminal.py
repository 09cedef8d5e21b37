"""Every prompt at a real terminal: `otc` in a pseudo-terminal (pexpect), answered as a person would.

Each prompt is tried with the right answer, a wrong one, Ctrl-C and Ctrl-D,
and once with no terminal at all (a new session without a controlling
terminal, as under cron or CI).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pexpect
import pytest

from tests.conftest import ROOT, otc
from tests.test_rpc_cli import Serving

TIMEOUT = 60


def spawn(*args: str, env: dict | None = None) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "onetimechat.cli", *args], cwd=str(ROOT), timeout=TIMEOUT,
                         encoding="utf-8", env={**os.environ, **(env or {})}, dimensions=(40, 160))


def finish(child: pexpect.spawn) -> tuple[int, str]:
    """(exit status, everything after the last expect) once the child ends."""
    child.expect(pexpect.EOF)
    rest = child.before
    child.close()
    return child.exitstatus if child.exitstatus is not None else 128 + (child.signalstatus or 0), rest


def error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("ERROR: ")]
    assert len(lines) == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    return lines[0]


@pytest.fixture
def device(tmp_path):
    home = tmp_path / "alice"
    otc("device", "init", "--home", str(home), "--name", "alice", check=True)
    serving = Serving(home, "127.0.0.1:0", "auto")
    yield home, serving.url
    serving.stop()


def code_of(home: Path) -> str:
    return (home / "pairing-code").read_text().strip()


# -- the laptop's pairing code ---------------------------------------------------------------------


def test_client_pair_asks_for_the_code_on_the_terminal(device, tmp_path):
    home, url = device
    child = spawn("client", "pair", "--device", url, env={"OTC_CLIENT_HOME": str(tmp_path / "laptop")})
    child.expect_exact("Type the pairing code the device shows: ")
    child.sendline(code_of(home))
    child.expect(r"Paired this laptop \(\S+\) with device alice")
    status, _ = finish(child)
    assert status == 0
    assert otc("client", "status", "--device", url, env={"OTC_CLIENT_HOME": str(tmp_path / "laptop")},
               check=True).returncode == 0


def test_client_pair_a_wrong_code_is_one_line_and_pairs_nothing(device, tmp_path):
    home, url = device
    child = spawn("client", "pair", "--device", url, env={"OTC_CLIENT_HOME": str(tmp_path / "laptop")})
    child.expect_exact("Type the pairing code the device shows: ")
    right = code_of(home)
    wrong = f"{(int(right[0]) + 1) % 10}{right[1:]}"
    child.sendline(wrong)
    status, out = finish(child)
    assert status != 0
    assert "code" in error_line(out).lower()
    refused = otc("client", "status", "--device", url, env={"OTC_CLIENT_HOME": str(tmp_path / "laptop")})
    assert refused.returncode != 0 and b"not paired" in refused.stderr


@pytest.mark.parametrize("key", ["ctrl-c", "ctrl-d"])
def test_client_pair_interrupted_at_the_prompt(device, tmp_path, key):
    _, url = device
    child = spawn("client", "pair", "--device", url, env={"OTC_CLIENT_HOME": str(tmp_path / "laptop")})
    child.expect_exact("Type the pairing code the device shows: ")
    if key == "ctrl-c":
        child.sendcontrol("c")
    else:
        child.sendeof()
    status, out = finish(child)
    line = error_line(out)
    if key == "ctrl-c":
        assert (status, line) == (130, "ERROR: interrupted")
    else:
        assert status == 2 and "No answer" in line


def test_client_pair_without_a_terminal_says_to_pass_the_code(device, tmp_path):
    _, url = device
    result = otc("client", "pair", "--device", url, env={"OTC_CLIENT_HOME": str(tmp_path / "laptop")},
                 new_session=True)
    assert result.returncode == 2
    assert error_line(result.stderr.decode()) == "ERROR: No terminal to type the code on; pass it with --code."


# -- the pairing string of a ceremony, and of a grant ----------------------------------------------


def _homes(tmp_path: Path, *names: str) -> list[Path]:
    homes = []
    for name in names:
        otc("device", "init", "--home", str(tmp_path / name), "--name", name, check=True)
        homes.append(tmp_path / name)
    return homes


def _ceremony(tmp_path: Path, kind: str) -> tuple[pexpect.spawn, pexpect.spawn, str]:
    """Host and joiner of a pad ceremony or a grant, each in its own terminal, both at their prompt."""
    if kind == "pad":
        a, b = _homes(tmp_path, "alice", "bob")
        host = spawn("pair", "host", "--home", str(a), "--listen", "127.0.0.1:0", "--size", "64K")
        join_args = ["pair", "join", "--home", str(b)]
        prompt = r"Does the other device show (\S+)\? \[y/N\] "
    else:
        auth, member = _homes(tmp_path, "campus", "alice")
        otc("abe", "authority", "--home", str(auth), check=True)
        host = spawn("abe", "grant", "host", "--home", str(auth), "--listen", "127.0.0.1:0",
                     "--attributes", "STAFF,ADMIN")
        join_args = ["abe", "grant", "join", "--home", str(member)]
        prompt = r"Does the other device show (\S+) and the same attributes\? \[y/N\] "
    host.expect(r"127\.0\.0\.1:(\d+)")
    port = host.match.group(1)
    join = spawn(*join_args, "--connect", f"127.0.0.1:{port}")
    host.expect(prompt)
    host_sas = host.match.group(1)
    join.expect(prompt)
    assert join.match.group(1) == host_sas  # the same string on both terminals
    return host, join, host_sas


@pytest.mark.parametrize("kind", ["pad", "grant"])
def test_both_owners_confirm_the_string_at_their_terminals(tmp_path, kind):
    host, join = _ceremony(tmp_path, kind)[:2]
    host.sendline("y")
    join.sendline("yes")
    host_status, host_out = finish(host)
    join_status, join_out = finish(join)
    assert (host_status, join_status) == (0, 0), host_out + join_out
    if kind == "pad":
        fingerprints = {re.search(r"Pad fingerprint: (.+?) \(", out).group(1) for out in (host_out, join_out)}
        assert len(fingerprints) == 1
        assert b"pad" in otc("device", "status", "--home", str(tmp_path / "alice"), check=True).stdout


@pytest.mark.parametrize("kind", ["pad", "grant"])
@pytest.mark.parametrize("answer", ["n", "", "maybe", "ctrl-c"])
def test_a_no_or_an_interrupt_at_either_terminal_makes_nothing(tmp_path, kind, answer):
    host, join = _ceremony(tmp_path, kind)[:2]
    if answer == "ctrl-c":
        join.sendcontrol("c")
    else:
        join.sendline(answer)
    host.sendline("y")
    host_status, host_out = finish(host)
    join_status, join_out = finish(join)
    assert host_status != 0 and join_status != 0
    error_line(join_out)
    error_line(host_out)
    if answer == "ctrl-c":
        assert join_status == 130
    if kind == "pad":
        for name in ("alice", "bob"):
            status = otc("device", "status", "--home", str(tmp_path / name), "--json", check=True).stdout
            assert b'"contacts": []' in status
    else:
        keys = otc("abe", "status", "--home", str(tmp_path / "alice"), check=True).stdout.decode()
        assert "STAFF" not in keys


@pytest.mark.parametrize("kind", ["pad", "grant"])
def test_a_ceremony_without_a_terminal_is_refused_before_it_listens(tmp_path, kind):
    if kind == "pad":
        (a,) = _homes(tmp_path, "alice")
        args = ["pair", "host", "--home", str(a), "--listen", "127.0.0.1:0", "--size", "64K"]
    else:
        (auth,) = _homes(tmp_path, "campus")
        otc("abe", "authority", "--home", str(auth), check=True)
        args = ["abe", "grant", "host", "--home", str(auth), "--listen", "127.0.0.1:0", "--attributes", "STAFF"]
    result = otc(*args, new_session=True, timeout=30)
    assert result.returncode == 2
    assert "No terminal" in error_line(result.stderr.decode())


# -- the device's PIN at its own terminal ----------------------------------------------------------


def _locked_home(tmp_path: Path) -> Path:
    pin_file = tmp_path / "pin"
    pin_file.write_text("482916\n")
    otc("device", "init", "--home", str(tmp_path / "alice"), "--name", "alice", "--pin-file", str(pin_file),
        check=True)
    return tmp_path / "alice"


def test_a_locked_device_asks_for_its_pin_at_its_terminal(tmp_path):
    home = _locked_home(tmp_path)
    child = spawn("device", "serve", "--home", str(home), "--listen", "127.0.0.1:0", "--confirm", "tty")
    try:
        child.expect(r"serving on (http://\S+) ")
        url = child.match.group(1)
        child.expect_exact("Device PIN: ")
        child.sendline("000000")  # a wrong one: said so, and asked again
        child.expect("Wrong PIN")
        child.expect_exact("Device PIN: ")
        child.sendline("482916")
        child.expect("Unlocked")
        import requests

        assert requests.get(url + "/v1/health", timeout=10).json()["status"] == "ok"
        child.sendcontrol("c")
        status, _ = finish(child)
        assert status in (0, 130)
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_ctrl_c_at_the_devices_pin_prompt_stops_it_cleanly(tmp_path):
    home = _locked_home(tmp_path)
    child = spawn("device", "serve", "--home", str(home), "--listen", "127.0.0.1:0", "--confirm", "tty")
    child.expect_exact("Device PIN: ")
    child.sendcontrol("c")
    status, out = finish(child)
    assert status in (0, 130) and "Traceback" not in out and "internal error" not in out
