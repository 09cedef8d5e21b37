"""The `otc device` and `otc pad` commands as a user runs them."""

from __future__ import annotations

import base64
import json
import os
import threading
import time

import pytest

from device.confirm import ConfirmRequest, TtyConfirm
from onetimechat import terminal
from tests.conftest import otc


def one_line_error(result) -> str:
    """A refusal: non-zero exit, one line on stderr, no traceback, nothing on stdout."""
    assert result.returncode != 0
    err = result.stderr.decode()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ERROR: "), err
    assert "Traceback" not in err
    assert result.stdout == b""
    return lines[0]


@pytest.fixture
def devices(tmp_path):
    a, b = tmp_path / "alice", tmp_path / "bob"
    otc("device", "init", "--home", str(a), "--name", "alice", check=True)
    otc("device", "init", "--home", str(b), "--name", "bob", check=True)
    result = otc("pad", "pair-local", "--size", "64K", str(a), str(b), check=True)
    assert "CSPRNG" in result.stderr.decode()  # it says where pad bytes came from
    assert "alice (initiator)" in result.stdout.decode()
    return a, b


def package(home, contact, text: bytes) -> str:
    return otc("device", "package", "--home", str(home), contact, input=text, check=True).stdout.decode()


def unpackage(home, b64: str):
    return otc("device", "unpackage", "--home", str(home), input=b64.encode())


def test_round_trip_and_exact_accounting(devices):
    a, b = devices
    message = "héllo bob, 12 bytes? no: more".encode()
    b64 = package(a, "bob", message)
    assert b64.endswith("\n")
    raw = base64.b64decode(b64.strip(), validate=True)
    assert len(raw) == 49 + len(message)
    result = unpackage(b, b64)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"contact": "alice", "kind": "text", "text": message.decode(), "warnings": []}
    status = json.loads(otc("device", "status", "--home", str(a), "--json", check=True).stdout)
    assert status["contacts"][0]["name"] == "bob"
    assert status["contacts"][0]["send"]["used"] == 16 + len(message)
    text = otc("device", "status", "--home", str(a), check=True).stdout.decode()
    assert f"send to       {16 + len(message)} of 32752 pad bytes used" in text
    text = otc("device", "status", "--home", str(b), check=True).stdout.decode()
    assert f"receive from  {16 + len(message)} of 32752 pad bytes used" in text


def test_refusals_are_one_line_and_release_nothing(devices):
    a, b = devices
    b64 = package(a, "bob", b"the secret plan")
    assert unpackage(b, b64).returncode == 0
    raw = base64.b64decode(b64)
    cases = {
        "replay": b64,
        "garbage": "this is not base64!!\n",
        "empty": "",
        "truncated": base64.b64encode(raw[:-3]).decode(),
        "wrong pad": base64.b64encode(raw[:5] + bytes(16) + raw[21:]).decode(),
    }
    for name, text in cases.items():
        result = unpackage(b, text)
        line = one_line_error(result)
        assert "secret plan" not in line, name
    assert "replay" in one_line_error(unpackage(b, b64))
    log = otc("device", "log", "--home", str(b), "--json", check=True).stdout.decode()
    events = [json.loads(line)["event"] for line in log.splitlines()]
    assert events.count("replay") == 2 and "unknown-pad" in events and events.count("malformed") == 3
    assert "secret plan" not in log


def test_gap_warning_in_json(devices):
    a, b = devices
    package(a, "bob", b"one")
    second = package(a, "bob", b"two")
    out = json.loads(unpackage(b, second).stdout)
    assert out["text"] == "two" and out["warnings"][0].startswith("gap: 19 bytes")


def test_command_errors(devices, tmp_path):
    a, b = devices
    nowhere = tmp_path / "nowhere"
    assert "otc device init" in one_line_error(otc("device", "status", "--home", str(nowhere)))
    assert not nowhere.exists()
    assert "already holds a device" in one_line_error(otc("device", "init", "--home", str(a), "--name", "x"))
    assert "Names are" in one_line_error(otc("device", "init", "--home", str(tmp_path / "c"), "--name", "bad name!"))
    assert "carol" in one_line_error(otc("device", "package", "--home", str(a), "carol", input=b"hi"))
    assert "UTF-8" in one_line_error(otc("device", "package", "--home", str(a), "bob", input=b"\xff\xfe"))
    assert "Not enough pad" in one_line_error(otc("device", "package", "--home", str(a), "bob", input=b"x" * 40000))
    usage = otc("device", "package", "bob")
    assert usage.returncode == 2 and "--home" in one_line_error(usage)
    assert one_line_error(otc("pad", "pair-local", "--size", "lots", str(a), str(b)))
    assert "different" in one_line_error(otc("pad", "pair-local", "--size", "1M", str(a), str(a)))
    assert "between" in one_line_error(otc("pad", "pair-local", "--size", "10", str(a), str(b)))
    assert one_line_error(otc("device", "frobnicate"))


@pytest.mark.parametrize("args", [
    [], ["device"], ["device", "init"], ["device", "package"], ["device", "unpackage"], ["device", "status"],
    ["device", "log"], ["pad"], ["pad", "pair-local"],
])
def test_every_command_has_help(args):
    result = otc(*args, "--help")
    assert result.returncode == 0 and b"usage: otc" in result.stdout


def test_auto_confirmation_says_so(devices):
    a, b = devices
    result = otc("device", "package", "--home", str(a), "--confirm", "auto", "bob", input=b"hi")
    assert result.returncode == 0 and "'auto'" in result.stderr.decode()


def test_confirm_without_a_terminal_is_a_clear_error(devices):
    a, b = devices
    result = otc("device", "package", "--home", str(a), "--confirm", "tty", "bob", input=b"hi",
                 new_session=True)
    assert "no terminal" in one_line_error(result)
    status = json.loads(otc("device", "status", "--home", str(a), "--json", check=True).stdout)
    assert status["contacts"][0]["send"]["used"] == 0


def _answer_on_pty(answer: bytes | None, timeout: float = 5.0, typed_before: bytes = b"") -> tuple[bool, bytes]:
    master, slave = os.openpty()
    shown = bytearray()
    os.write(master, typed_before)  # typed at the device's keyboard before any question was shown

    def operator() -> None:
        deadline = time.monotonic() + 3
        while b"Approve?" not in shown and time.monotonic() < deadline:
            shown.extend(os.read(master, 4096))
        if answer is not None:
            os.write(master, answer)

    t = threading.Thread(target=operator)
    t.start()
    try:
        approved = TtyConfirm(tty_path=os.ttyname(slave)).ask(
            ConfirmRequest(contact="bob", kind="text", plaintext=b"line one\nline two", consumes=49, left_after=951),
            timeout,
        )
    finally:
        t.join()
        os.close(master)
        os.close(slave)
    return approved, bytes(shown)


def test_tty_confirmation_on_a_real_pseudo_terminal():
    approved, shown = _answer_on_pty(b"y\n")
    assert approved
    assert b"to bob" in shown and b"line one" in shown and b"line two" in shown
    assert b"49 pad bytes" in shown and b"951 will be left" in shown
    assert _answer_on_pty(b"n\n")[0] is False
    assert _answer_on_pty(b"\n")[0] is False
    assert _answer_on_pty(None, timeout=0.3)[0] is False


def test_a_yes_typed_before_the_question_approves_nothing():
    # Someone at the device types "y" and Enter while no question is shown; the next request must still wait
    # for its own answer: declined by the owner's "n", or by the timeout.
    approved, shown = _answer_on_pty(b"n\n", typed_before=b"y\n")
    assert approved is False and b"Approve?" in shown
    assert _answer_on_pty(None, timeout=0.3, typed_before=b"yes\ny\n")[0] is False
    assert _answer_on_pty(b"y\n", typed_before=b"n\n")[0] is True


def test_a_ceremony_question_ignores_what_was_typed_before_it():
    master, slave = os.openpty()
    shown = bytearray()

    def owner() -> None:  # answers once the question is on the screen
        while b"[y/N]" not in shown:
            shown.extend(os.read(master, 4096))
        os.write(master, b"n\n")

    try:
        os.write(master, b"y\n")  # typed ahead
        answering = threading.Thread(target=owner, daemon=True)
        answering.start()
        assert terminal.yes("Does the other device show 1234? [y/N] ", no_terminal="none",
                            tty=os.ttyname(slave)) is False
        answering.join(30)
    finally:
        os.close(master)
        os.close(slave)


def test_init_without_a_pin_says_in_one_line_the_home_is_not_locked(tmp_path):
    # Issue 19 (red team): an unlocked home was made silently.
    made = otc("device", "init", "--home", str(tmp_path / "a"), "--name", "alice", check=True)
    warning = [ln for ln in made.stderr.decode().splitlines() if ln.strip()]
    assert len(warning) == 1 and "not PIN-locked" in warning[0] and "--pin-file" in warning[0]
    assert "not PIN-locked" in made.stdout.decode()
    # --no-pin says it is meant: no warning. A PIN file: a locked home, no warning.
    assert otc("device", "init", "--home", str(tmp_path / "b"), "--name", "bob", "--no-pin", check=True).stderr == b""
    pin = tmp_path / "pin"
    pin.write_text("482913\n")
    locked = otc("device", "init", "--home", str(tmp_path / "c"), "--name", "carol", "--pin-file", str(pin),
                 check=True)
    assert locked.stderr == b"" and "(PIN-locked)" in locked.stdout.decode()
    both = otc("device", "init", "--home", str(tmp_path / "d"), "--name", "dave", "--pin-file", str(pin), "--no-pin")
    assert both.returncode == 2 and not (tmp_path / "d").exists()


def test_hints_name_the_flag_and_the_help_that_explain_the_mistake(tmp_path):
    # A cold run of the README: the hints pointed at `otc --help` and at a flag pair-local does not have.
    words = otc("send", "alice", "text", "via", "send")
    assert words.returncode == 2 and "(see `otc send --help`)" in words.stderr.decode()
    deep = otc("device", "status", "--no-such-flag")
    assert deep.returncode == 2 and "(see `otc device status --help`)" in deep.stderr.decode()
    empty = otc("send", "alice", "--device", "http://127.0.0.1:9", "--relay", "http://127.0.0.1:9")
    assert empty.returncode == 2 and "- to read it from stdin" in empty.stderr.decode()
    pin = tmp_path / "pin"
    pin.write_text("482913\n")
    otc("device", "init", "--home", str(tmp_path / "a"), "--name", "alice", "--pin-file", str(pin), check=True)
    otc("device", "init", "--home", str(tmp_path / "b"), "--name", "bob", "--no-pin", check=True)
    locked = otc("pad", "pair-local", "--size", "4096", str(tmp_path / "a"), str(tmp_path / "b"))
    error = locked.stderr.decode()
    assert locked.returncode != 0 and "--pin-file-a" in error and "PIN-locked" in error
    assert len([ln for ln in error.splitlines() if ln.strip()]) == 1
