"""Red team 24 (ported from its clone, 5ae03c4): the laptop's RPC counter file (client/state.py next_counter;
docs/device-rpc.md).

Claim attacked: "A lost write of the counter file cannot make a counter repeat: counters follow the clock."
The counter is also the ChaCha20-Poly1305 nonce of the sealed request (docs/device-rpc.md), so a repeated
counter is a repeated (key, nonce) pair on the wire, whatever the device then decides: two different bodies
under one nonce give an eavesdropper on the laptop-device link their XOR (and Poly1305's one-time key).

A power cut keeps of a file what was last synced (fsync or fdatasync) and nothing written after; the wall
clock may then stand earlier than when the lost counters were taken (an RTC off by the time zone or dead, NTP
stepping it back, a clock set by hand). Ported: the red team's test wrote b"" over the file (it was never
synced); here the power cut puts back what the file held at its last sync, whatever the code does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client import state as state_mod
from client.state import ClientState

URL = "http://pad.invalid:7000"


class _Disk:
    """What survives a power cut: each file's bytes at its last sync (through the fd synced)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: dict[str, bytes] = {}
        self.syncs = 0
        real_fsync = os.fsync

        def sync(fd: int) -> None:
            self.syncs += 1
            real_fsync(fd)
            name = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isfile(name):
                with open(name, "rb") as f:
                    self.synced[name] = f.read()

        monkeypatch.setattr(os, "fsync", sync)
        monkeypatch.setattr(os, "fdatasync", sync, raising=False)

    def power_cut(self, path: Path) -> None:
        path.write_bytes(self.synced.get(str(path.resolve()), b""))


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "devices").mkdir(parents=True)
    return home


def test_lost_counter_write_plus_clock_step_back_repeats_a_counter(tmp_path, monkeypatch) -> None:
    home = _home(tmp_path)
    now_us = 1_800_000_000 * 10**6
    clock = {"ns": (now_us + 3600 * 10**6) * 1000}  # the laptop's clock an hour ahead (RTC kept in local time)
    monkeypatch.setattr(state_mod.time, "time_ns", lambda: clock["ns"])
    disk = _Disk(monkeypatch)

    first = ClientState(home)
    counter_file = first._path(URL).with_suffix(".counter")
    used = [first.next_counter(URL) for _ in range(3)]

    # Power cut: what was not synced is lost. At boot NTP steps the clock back by the hour.
    disk.power_cut(counter_file)
    clock["ns"] = now_us * 1000
    second = ClientState(home)  # a new otc process
    early = second.next_counter(URL)
    assert early > max(used), f"after a lost write the counters went back: used {used}, then {early}"


def test_lost_counter_write_then_the_clock_passes_the_same_microsecond_again(tmp_path, monkeypatch) -> None:
    """The same, shown as the repeat itself: the file lost and the clock stepped back, a call taken when the
    clock again reads what it read at an earlier call gets that call's counter (and nonce)."""
    home = _home(tmp_path)
    t0 = 1_800_003_600 * 10**9
    clock = {"ns": t0}
    monkeypatch.setattr(state_mod.time, "time_ns", lambda: clock["ns"])
    disk = _Disk(monkeypatch)
    first = ClientState(home)
    used = [first.next_counter(URL) for _ in range(5)]
    disk.power_cut(first._path(URL).with_suffix(".counter"))
    clock["ns"] = t0 - 3600 * 10**9  # NTP steps the clock back at boot...
    ClientState(home).next_counter(URL)
    disk.power_cut(first._path(URL).with_suffix(".counter"))  # ...power cut again...
    clock["ns"] = t0  # ...and an hour later it reads t0 again
    again = ClientState(home).next_counter(URL)
    assert again not in used, f"counter {again} (the request nonce) used twice"


def test_counters_rise_with_one_sync_per_block_not_per_call(tmp_path, monkeypatch) -> None:
    """The fix must not cost a sync per device call (issue 24's speed work took that out)."""
    home = _home(tmp_path)
    disk = _Disk(monkeypatch)
    state = ClientState(home)
    taken = [state.next_counter(URL) for _ in range(200)]
    assert taken == sorted(set(taken))
    assert disk.syncs <= 4, f"{disk.syncs} syncs for 200 counters"
    other = ClientState(home).next_counter(URL)  # another process: above all, one sync more
    assert other > taken[-1]
