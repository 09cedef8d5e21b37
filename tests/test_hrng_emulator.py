"""The emulated HRNG end to end: real pseudo-terminals read through pyserial, every fault mode,
the OneRNG protocol as exact command sequences, and `otc` commands on top."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import serial

from hrng.emulator import Emulator, Noise
from hrng.errors import HealthTestFailure, HRNGError, SourceDisconnected, SourceStalled
from hrng.health import APT_WINDOW, STARTUP_SAMPLES
from hrng.mixer import CheckedSource
from hrng.sources import open_source
from tests.conftest import ROOT, otc

RATE = 4_000_000  # fast, so that tests are quick; the bench measures a 1 MB/s source


def read_until_failure(checked: CheckedSource, limit: int = 1 << 20) -> tuple[bytes, HRNGError | None]:
    """Read 512 checked bytes at a time; return what was released and the failure that stopped it."""
    out = b""
    try:
        while len(out) < limit:
            out += checked.read(512)
    except HRNGError as exc:
        return out, exc
    return out, None


def stream_offset(released: bytes, seed: bytes, n: int = 1 << 20) -> int:
    """How many of the emulator's bytes the reader never saw (sent before its port was set up)."""
    index = Noise(seed).read(n).find(released[:64])
    assert index >= STARTUP_SAMPLES
    return index - STARTUP_SAMPLES


def wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_good_emulated_source_passes():
    with Emulator(rate=RATE, seed=b"good") as emu:
        assert emu.url == f"serial://{emu.path}"
        checked = CheckedSource(open_source(emu.url))
        try:
            data = b"".join(checked.read(1 << 16) for _ in range(16))
        finally:
            checked.close()
    d = stream_offset(data, b"good", 2 << 20)
    assert data == Noise(b"good").read(STARTUP_SAMPLES + d + len(data))[STARTUP_SAMPLES + d :]
    stats = checked.stats
    assert stats.startup_passed and stats.longest_run < 5 and stats.highest_apt < 16
    assert emu.sent >= len(data) + STARTUP_SAMPLES


def test_it_streams_only_while_a_reader_holds_it_open():
    with Emulator(rate=RATE) as emu:
        time.sleep(0.2)
        assert emu.sent == 0 and not emu.reader_present
        port = serial.Serial(emu.path, timeout=2)
        assert len(port.read(10_000)) == 10_000
        assert emu.reader_present
        port.close()
        assert wait(lambda: not emu.reader_present)
        sent = emu.sent
        time.sleep(0.2)
        assert emu.sent == sent  # no reader, no DTR: the device holds still


@pytest.mark.parametrize("seed", [b"stuck-1", b"stuck-2"])
def test_a_stuck_source_is_caught_within_the_rct_cutoff(seed):
    fault_after = 8192
    with Emulator(rate=RATE, seed=seed, fault="stuck", fault_after=fault_after) as emu:
        checked = CheckedSource(open_source(emu.url))
        released, second = read_until_failure(checked)
        checked.close()
    # The first alarm discards the batch and reruns the start-up test, which the stuck source fails too.
    assert isinstance(second, HealthTestFailure) and second.test == "RCT" and second.startup
    failure = second.first
    assert isinstance(failure, HealthTestFailure) and failure.test == "RCT" and not failure.startup
    assert failure.sample < second.sample
    d = stream_offset(released, seed)
    stuck_from = fault_after - d  # the first stuck sample, in the reader's count
    # At most C = 5 equal samples in a row reach the test, counting a last good one equal to them.
    assert stuck_from <= failure.sample <= stuck_from + checked.cutoffs.rct - 1
    # Nothing from the failing window reached the reader; all it got came before it.
    assert len(released) <= failure.sample // APT_WINDOW * APT_WINDOW - STARTUP_SAMPLES
    good = Noise(seed).read(fault_after)
    assert released == good[STARTUP_SAMPLES + d : STARTUP_SAMPLES + d + len(released)]


def test_a_biased_source_is_caught_by_the_apt():
    fault_after = 8192
    with Emulator(rate=RATE, seed=b"bias", fault="bias", fault_after=fault_after) as emu:
        checked = CheckedSource(open_source(emu.url))
        released, second = read_until_failure(checked)
        checked.close()
    assert isinstance(second, HealthTestFailure) and second.test == "APT" and second.startup
    failure = second.first
    assert isinstance(failure, HealthTestFailure) and failure.test == "APT"
    d = stream_offset(released, b"bias")
    assert fault_after <= failure.sample + d < fault_after + 2 * APT_WINDOW
    assert len(released) <= failure.sample // APT_WINDOW * APT_WINDOW - STARTUP_SAMPLES
    assert "Adaptive Proportion Test" in str(failure)


def test_a_dropout_longer_than_the_timeout_stops_generation():
    with Emulator(rate=RATE, fault="dropout", fault_after=4096) as emu:
        checked = CheckedSource(open_source(emu.url + "?timeout=0.3"))
        released, failure = read_until_failure(checked)
        checked.close()
    assert isinstance(failure, SourceStalled) and "sent nothing for 0.3 s" in str(failure)
    assert len(released) <= 4096 - STARTUP_SAMPLES


def test_a_short_dropout_is_ridden_out():
    with Emulator(rate=RATE, fault="dropout", fault_after=4096, dropout=0.3) as emu:
        checked = CheckedSource(open_source(emu.url + "?timeout=2"))
        data = checked.read(20_000)
        checked.close()
    assert len(data) == 20_000


def test_a_disconnect_is_a_clean_error_with_nothing_from_the_broken_window():
    with Emulator(rate=RATE, fault="disconnect", fault_after=6000) as emu:
        checked = CheckedSource(open_source(emu.url))
        released, failure = read_until_failure(checked)
        assert isinstance(failure, SourceDisconnected) and "was disconnected" in str(failure)
        assert wait(emu.disconnected.is_set) and not os.path.exists(emu.path)
        with pytest.raises(HRNGError):
            checked.read(1)  # it stays stopped
        checked.close()  # closing a vanished device is not an error
    assert len(released) <= (6000 // APT_WINDOW) * APT_WINDOW - STARTUP_SAMPLES


# -- the OneRNG protocol -----------------------------------------------------------------


def test_onerng_sends_nothing_until_told_and_obeys_its_commands():
    with Emulator(protocol="onerng", rate=RATE) as emu:
        assert emu.url.startswith("onerng://")
        port = serial.Serial(emu.path, timeout=0.3)
        try:
            assert port.read(100) == b""  # open, but not started
            port.write(b"\nxcmdO")  # noise before a command is ignored, as the firmware does
            assert len(port.read(1000)) == 1000
            port.write(b"cmdo")
            assert wait(lambda: not emu.running)
            time.sleep(0.05)
            port.reset_input_buffer()
            assert port.read(100) == b""
        finally:
            port.close()
        assert emu.commands == ["cmdO", "cmdo"]


@pytest.mark.parametrize(("url_tail", "mode_command"), [("", "cmd0"), ("?mode=1", "cmd1"), ("?mode=7", "cmd7")])
def test_onerng_source_speaks_the_protocol_exactly(url_tail, mode_command):
    with Emulator(protocol="onerng", rate=RATE) as emu:
        source = open_source(emu.url + url_tail)
        # On open: stop, choose the mode, flush the pool, start.
        assert wait(lambda: len(emu.commands) == 4)
        assert emu.commands == ["cmdo", mode_command, "cmdw", "cmdO"]
        checked = CheckedSource(source)
        assert len(checked.read(50_000)) == 50_000
        checked.close()
        # On close: stop output, stop gathering noise, flush the pool.
        assert wait(lambda: len(emu.commands) == 7)
        assert emu.commands[4:] == ["cmdo", "cmd4", "cmdw"]
        assert not emu.running and emu.mode == 4


# -- otc hrng and otc pad pair-local on top ---------------------------------------------------


def start_emulate(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "onetimechat.cli", "hrng", "emulate", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    url = proc.stdout.readline().strip()
    assert url.startswith(("serial:///dev/", "onerng:///dev/")), proc.stderr.read()
    return proc, url


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)  # generous: a loaded CI machine, not a figure under test
    assert proc.returncode == 0, err
    return err


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    notes = ("hrng [", "pad [", "otc: ")  # progress, and where bytes come from
    lines = [ln for ln in result.stderr.decode().splitlines() if ln.strip() and not ln.startswith(notes)]
    assert len(lines) == 1 and lines[0].startswith("ERROR: ") and "Traceback" not in result.stderr.decode()
    return lines[0]


def test_otc_hrng_emulate_and_test():
    proc, url = start_emulate("--rate", "4M")
    try:
        result = otc("hrng", "test", "--source", url, "--bytes", "256K", "--json", check=True)
        report = json.loads(result.stdout)
        assert report["source"] == url and report["bytes"] == 256 * 1024 and not report["insecure"]
        assert report["health"]["passed"] and report["health"]["rct_cutoff"] == 6
        assert report["health"]["apt_cutoff"] == 19 and report["health"]["apt_window"] == 512
        assert 7.0 < report["mcv"]["min_entropy"] <= 8.0 and report["chi_square"]["dof"] == 255
        assert report["bytes_per_second"] > 0
        text = otc("hrng", "test", "--source", url, "--bytes", "64K", check=True).stdout.decode()
        assert "pseudo-terminal" in text and "health       passed" in text and "SP 800-90B 6.3.1" in text
    finally:
        err = stop(proc)
    assert "a fake for tests and demos" in err and "stopped" in err


def test_otc_hrng_test_raises_the_alarm_on_a_stuck_source():
    proc, url = start_emulate("--rate", "4M", "--fault", "stuck", "--fault-after", "20K")
    try:
        line = one_line_error(otc("hrng", "test", "--source", url, "--bytes", "1M"))
    finally:
        stop(proc)
    assert line.startswith("ERROR: HRNG ALARM: serial:///dev/") and "Repetition Count Test" in line


def test_otc_hrng_emulate_disconnect_exits_by_itself():
    proc, url = start_emulate("--rate", "4M", "--fault", "disconnect", "--fault-after", "8K")
    line = one_line_error(otc("hrng", "test", "--source", url, "--bytes", "1M"))
    assert "disconnected" in line
    _, err = proc.communicate(timeout=60)  # generous: a loaded CI machine, not a figure under test
    assert proc.returncode == 0 and "disconnected itself" in err


def test_otc_hrng_test_on_the_os_csprng_needs_insecure_and_says_so_everywhere():
    assert "add --insecure" in one_line_error(otc("hrng", "test", "--source", "os:"))
    result = otc("hrng", "test", "--source", "os:", "--insecure", "--bytes", "64K", check=True)
    lines = result.stdout.decode().splitlines()
    assert lines and all("INSECURE" in line for line in lines)
    assert "INSECURE" in result.stderr.decode()
    report = json.loads(otc("hrng", "test", "--source", "os:", "--insecure", "--bytes", "4K", "--json").stdout)
    assert report["insecure"] and report["notice"].startswith("INSECURE")


@pytest.mark.parametrize(
    "args",
    [
        ("hrng", "test", "--source", "serial://dev/ttyACM0"),
        ("hrng", "test", "--source", "serial:///dev/ttyACM0", "--insecure"),
        ("hrng", "test", "--source", "os:", "--insecure", "--bytes", "0"),
        ("hrng", "emulate", "--rate", "0"),
        ("hrng", "emulate", "--dropout", "1"),
        ("hrng", "emulate", "--fault", "melt"),
    ],
)
def test_usage_errors_are_one_line(args):
    result = otc(*args)
    one_line_error(result)
    assert result.returncode == 2


def test_unopenable_source_is_one_line(tmp_path):
    line = one_line_error(otc("hrng", "test", "--source", f"serial://{tmp_path}/nothing"))
    assert line.startswith("ERROR: Cannot open the HRNG serial://")


# -- pads from the mixer ---------------------------------------------------------------------


@pytest.fixture
def homes(tmp_path):
    a, b = tmp_path / "alice", tmp_path / "bob"
    otc("device", "init", "--home", str(a), "--name", "alice", check=True)
    otc("device", "init", "--home", str(b), "--name", "bob", check=True)
    return a, b


def pad_files(home) -> list:
    return sorted(p.name for p in (home / "pads").iterdir()) if (home / "pads").exists() else []


def test_pair_local_takes_pad_bytes_from_the_hrng(homes):
    a, b = homes
    with Emulator(rate=RATE) as emu:
        result = otc("pad", "pair-local", "--size", "256K", "--hrng", emu.url, str(a), str(b), check=True)
    err = result.stderr.decode()
    assert f"pad bytes come from {emu.url} (a pseudo-terminal: an emulated HRNG, not hardware) XOR the OS CSPRNG" in err
    assert "not a hardware RNG" not in err
    (pad_a,), (pad_b,) = pad_files(a), pad_files(b)
    assert (a / "pads" / pad_a).read_bytes() == (b / "pads" / pad_b).read_bytes()
    assert emu.sent >= 256 * 1024 + STARTUP_SAMPLES


def test_pair_local_with_two_hrngs(homes):
    a, b = homes
    with Emulator(rate=RATE) as one, Emulator(rate=RATE) as two:
        result = otc("pad", "pair-local", "--size", "64K", "--hrng", one.url, "--hrng", two.url, str(a), str(b),
                     check=True)
        assert one.sent >= 64 * 1024 and two.sent >= 64 * 1024
    assert f"{one.url} (a pseudo-terminal: an emulated HRNG, not hardware) XOR {two.url}" in result.stderr.decode()


@pytest.mark.parametrize(
    ("fault", "says", "event"),
    [
        ("disconnect", "was disconnected", "hrng-disconnected"),
        ("stuck", "HRNG ALARM", "hrng-alarm"),
        ("bias", "Adaptive Proportion Test", "hrng-alarm"),
    ],
)
def test_a_failing_hrng_makes_no_partial_pad(homes, fault, says, event):
    a, b = homes
    with Emulator(rate=RATE, fault=fault, fault_after=100_000) as emu:
        result = otc("pad", "pair-local", "--size", "1M", "--hrng", emu.url, str(a), str(b))
    assert says in one_line_error(result)
    assert pad_files(a) == [] and pad_files(b) == []  # no pad, whole or partial, nor a temporary file
    for home in (a, b):
        status = json.loads(otc("device", "status", "--home", str(home), "--json", check=True).stdout)
        assert status["contacts"] == []
        log = otc("device", "log", "--home", str(home), check=True).stdout.decode()
        assert event in log and emu.url in log


def test_pair_local_refuses_a_bad_hrng_url_before_anything(homes):
    a, b = homes
    result = otc("pad", "pair-local", "--size", "64K", "--hrng", "os:", str(a), str(b))
    assert "OS CSPRNG alone" in one_line_error(result) and result.returncode == 2
    result = otc("pad", "pair-local", "--size", "64K", "--hrng", "serial:/dev/x", str(a), str(b))
    assert "three slashes" in one_line_error(result)
    assert pad_files(a) == [] and pad_files(b) == []
