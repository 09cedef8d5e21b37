"""A whole draw through the health tests at alpha = 2^-40 (issue 17): a healthy source never aborts a pad
as large as 4 GiB, and a source that fails twice in one draw stops it.

The healthy source is the emulator's noise (``hrng.emulator.Noise``), streamed through a FIFO and read as
``file://`` (the path the Pi's /dev/hwrng takes): the pseudo-terminal the emulator normally uses runs at
about 13 MB/s here, which would make 4 GiB take minutes.
"""

from __future__ import annotations

import os
import threading

import pytest

from hrng.emulator import Emulator, Noise
from hrng.errors import HealthTestFailure
from hrng.mixer import Mixer
from hrng.sources import open_source

GiB = 1 << 30
DRAW = 64 << 20


@pytest.mark.slow
def test_a_healthy_emulated_source_gives_4_gib_in_one_draw_without_an_abort(tmp_path):
    fifo = tmp_path / "hwrng"
    os.mkfifo(fifo)

    def stream() -> None:
        noise = Noise()
        with open(fifo, "wb", buffering=0) as out:
            try:
                while True:
                    out.write(noise.read(1 << 22))
            except BrokenPipeError:
                pass  # the draw is over: the reader closed the source

    writer = threading.Thread(target=stream, daemon=True)
    writer.start()
    recovered: list = []
    with Mixer([open_source(f"file://{fifo}")], on_recovered=recovered.append) as mixer:
        got = 0
        while got < 4 * GiB:
            got += len(mixer.read(DRAW))
        stats = mixer.checked[0].stats
        assert mixer.failure is None and mixer.produced == 4 * GiB
        assert stats.released >= 4 * GiB and stats.samples >= 4 * GiB + 1024
        # At 2^-40 a false alarm in 4 GiB has odds of about 1 in 250, and even one is recovered from.
        assert stats.alarms == len(recovered) <= 1
        assert stats.longest_run < mixer.checked[0].cutoffs.rct and stats.highest_apt < mixer.checked[0].cutoffs.apt
    writer.join(10)
    assert not writer.is_alive()


@pytest.mark.parametrize("fault", ["stuck", "bias"])
def test_an_emulated_source_failing_twice_in_one_draw_stops_it_with_the_alarm_shown(fault):
    alarms: list = []
    recovered: list = []
    with Emulator(rate=4_000_000, seed=fault.encode(), fault=fault, fault_after=1 << 16) as emu:
        with Mixer.from_urls([emu.url], on_alarm=alarms.append, on_recovered=recovered.append) as mixer:
            with pytest.raises(HealthTestFailure) as info:
                while True:
                    mixer.read(1 << 16)
    (first,) = recovered
    assert alarms == [info.value] and info.value.first is first
    assert "a second alarm in one draw" in str(info.value) and "HRNG ALARM" in str(info.value)
    assert first.sample < info.value.sample and info.value.startup  # the rerun start-up test caught it again
