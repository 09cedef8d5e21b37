"""Source URLs (parsing, fuzzing, round trips), the file and OS sources, and the mixer."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hrng.errors import (
    HealthTestFailure,
    HRNGError,
    InsecureSource,
    InvalidSourceURL,
    SourceDisconnected,
    SourceHalted,
    SourceUnavailable,
)
from hrng.health import STARTUP_SAMPLES
from hrng.mixer import Mixer, os_stream, pad_random
from hrng.sources import BytesSource, SourceURL, open_source, parse_url
from tests.conftest import ROOT


def shake(label: str, n: int) -> bytes:
    return hashlib.shake_256(label.encode()).digest(n)


def zeros(n: int) -> bytes:
    """An injected "OS CSPRNG" of zeros, so the mixer's output shows its hardware input exactly."""
    return bytes(n)


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme", "path", "h", "timeout", "mode", "canonical"),
    [
        ("serial:///dev/ttyACM0", "serial", "/dev/ttyACM0", 8.0, 2.0, 0, "serial:///dev/ttyACM0"),
        ("SERIAL:///dev/ttyACM0?h=8", "serial", "/dev/ttyACM0", 8.0, 2.0, 0, "serial:///dev/ttyACM0"),
        ("serial:///dev/pts/3?h=7.5&timeout=0.25", "serial", "/dev/pts/3", 7.5, 0.25, 0,
         "serial:///dev/pts/3?h=7.5&timeout=0.25"),
        ("onerng:///dev/ttyACM1?mode=1&h=2", "onerng", "/dev/ttyACM1", 2.0, 2.0, 1,
         "onerng:///dev/ttyACM1?h=2&mode=1"),
        ("file:///dev/hwrng", "file", "/dev/hwrng", 8.0, 2.0, 0, "file:///dev/hwrng"),
        ("file:///tmp/a%20b%3Fc", "file", "/tmp/a b?c", 8.0, 2.0, 0, "file:///tmp/a%20b%3Fc"),
        ("os:", "os", "", 8.0, 2.0, 0, "os:"),
    ],
)
def test_valid_urls(text, scheme, path, h, timeout, mode, canonical):
    spec = parse_url(text)
    assert (spec.scheme, spec.path, spec.h, spec.timeout, spec.mode) == (scheme, path, h, timeout, mode)
    assert spec.url() == canonical
    assert parse_url(canonical) == spec


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Not a random source URL"),
        ("/dev/ttyACM0", "Not a random source URL"),
        ("usb:///dev/ttyACM0", "Not a random source URL"),
        ("fake:bytes", "Not a random source URL"),
        ("serial://dev/ttyACM0", "three slashes"),
        ("serial:/dev/ttyACM0", "three slashes"),
        ("serial://host/dev/ttyACM0", "three slashes"),
        ("serial:///", "not a directory"),
        ("serial:///dev/", "not a directory"),
        ("serial:///dev/tty ACM0", "no spaces"),
        ("serial:///dev/tty\nACM0", "no spaces"),
        ("serial:///dev/tty%00ACM0", "no control characters"),
        ("serial:///dev/tty%ffACM0", "UTF-8"),
        ("serial:///dev/ttyACM0#x", "fragment"),
        ("serial:///dev/ttyACM0?h", "name=value"),
        ("serial:///dev/ttyACM0?h=", "name=value"),
        ("serial:///dev/ttyACM0?&", "name=value"),
        ("serial:///dev/ttyACM0?h=0", "above 0"),
        ("serial:///dev/ttyACM0?h=8.5", "at most 8"),
        ("serial:///dev/ttyACM0?h=-1", "plain decimal"),
        ("serial:///dev/ttyACM0?h=nan", "plain decimal"),
        ("serial:///dev/ttyACM0?h=1e1", "plain decimal"),
        ("serial:///dev/ttyACM0?h=1.2.3", "plain decimal"),
        ("serial:///dev/ttyACM0?h=7&h=8", "given twice"),
        ("serial:///dev/ttyACM0?mode=1", "not 'mode'"),
        ("serial:///dev/ttyACM0?timeout=0", "above 0"),
        ("serial:///dev/ttyACM0?timeout=9999", "at most 3600"),
        ("file:///dev/hwrng?timeout=1", "not 'timeout'"),
        ("onerng:///dev/ttyACM0?mode=4", "mode is one of"),
        ("onerng:///dev/ttyACM0?mode=x", "mode is one of"),
        ("os:x", "os: alone"),
        ("os://", "os: alone"),
        ("os:?h=8", "os: alone"),
        ("serial:///dev/" + "a" * 5000, "Not a random source URL"),
    ],
)
def test_invalid_urls_say_why(text, says):
    with pytest.raises(InvalidSourceURL) as info:
        parse_url(text)
    assert says in str(info.value)
    assert info.value.exit_status == 2 and "\n" not in str(info.value)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"(serial|onerng|file|os):[/?#%=&a-z0-9.]{0,30}", fullmatch=True))
def test_parser_fuzz_raises_only_its_own_error(text):
    try:
        spec = parse_url(text)
    except InvalidSourceURL:
        return
    assert parse_url(spec.url()) == spec


path_chars = st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=("Cs",))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["serial", "onerng", "file"]),
    st.lists(st.text(path_chars, min_size=1, max_size=12).filter(lambda s: "/" not in s), min_size=1, max_size=4),
    st.floats(min_value=0.001, max_value=8.0, allow_nan=False),
    st.floats(min_value=0.001, max_value=3600.0, allow_nan=False),
    st.sampled_from([0, 1, 2, 3, 6, 7]),
)
def test_canonical_urls_round_trip(scheme, parts, h, timeout, mode):
    spec = SourceURL(scheme, "/" + "/".join(parts), h=h,
                     timeout=timeout if scheme != "file" else 2.0, mode=mode if scheme == "onerng" else 0)
    text = spec.url()
    assert all(0x21 <= ord(c) < 0x7F for c in text)
    assert parse_url(text) == spec


def test_importing_hrng_touches_no_hardware():
    code = "import sys, onetimechat.cli.hrng, hrng.mixer, hrng.sources, hrng.emulator; print('serial' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# -- sources ---------------------------------------------------------------------------


def test_file_source_reads_and_its_end_is_a_disconnect(tmp_path):
    data = shake("file", 5000)
    (tmp_path / "rng").write_bytes(data)
    source = open_source(f"file://{tmp_path}/rng")
    got = b""
    with pytest.raises(SourceDisconnected, match="ended"):
        while True:
            got += source.read(4096)
    assert got == data
    source.close()


def test_unopenable_sources_say_so(tmp_path):
    with pytest.raises(SourceUnavailable, match="Cannot open the HRNG file://"):
        open_source(f"file://{tmp_path}/missing")
    with pytest.raises(SourceUnavailable, match="Cannot open the HRNG serial://"):
        open_source(f"serial://{tmp_path}/missing")
    with pytest.raises(SourceUnavailable, match="Cannot open the HRNG serial://"):
        open_source(f"serial://{tmp_path}")  # a directory, not a serial port


def test_os_source_is_not_hardware():
    source = open_source("os:")
    assert not source.hardware and len(source.read(100)) == 100


# -- the mixer ---------------------------------------------------------------------------


def test_mixer_is_the_xor_of_checked_hardware_bytes_and_the_os_csprng():
    a, b = shake("a", 200_000), shake("b", 200_000)
    pad = shake("os", 100_000)
    used = 0

    def os_random(n: int) -> bytes:  # the injected "OS CSPRNG", read in order
        nonlocal used
        used += n
        return pad[used - n : used]

    with Mixer([BytesSource(a, chunk=3000), BytesSource(b, chunk=70_000)], os_random=os_random) as mixer:
        out = mixer.read(1000) + mixer.read(99_000)
    expected = bytes(x ^ y ^ z for x, y, z in zip(a[STARTUP_SAMPLES:], b[STARTUP_SAMPLES:], pad))
    assert out == expected[:100_000]
    assert mixer.produced == 100_000


def test_mixer_over_a_file_url_gives_the_files_bytes_after_the_startup_test(tmp_path):
    data = shake("file-mixer", 70_000)
    (tmp_path / "rng").write_bytes(data)
    with Mixer.from_urls([f"file://{tmp_path}/rng", "os:"]) as mixer:
        mixer._os_random = zeros
        assert mixer.read(65_536) == data[STARTUP_SAMPLES : STARTUP_SAMPLES + 65_536]
        assert "file://" in mixer.describe() and mixer.describe().endswith("XOR the OS CSPRNG")
        with pytest.raises(SourceDisconnected):
            mixer.read(70_000)  # the file ends: no partial output


def test_the_os_csprng_alone_needs_the_explicit_flag():
    with pytest.raises(InsecureSource):
        Mixer.from_urls([])
    with pytest.raises(InsecureSource):
        Mixer.from_urls(["os:"])
    with pytest.raises(InsecureSource):
        Mixer([])
    with Mixer.from_urls(["os:"], insecure_os_only=True) as mixer:
        assert mixer.insecure and mixer.describe().startswith("INSECURE")
        assert len(mixer.read(64)) == 64
    with pytest.raises(ValueError):
        Mixer([BytesSource(b"x")], insecure_os_only=True)


def test_every_url_is_checked_before_any_source_is_opened(tmp_path):
    (tmp_path / "rng").write_bytes(b"x")
    with pytest.raises(InvalidSourceURL):
        Mixer.from_urls([f"file://{tmp_path}/rng", "serial://oops"])


def test_a_failed_open_closes_the_sources_already_opened(tmp_path):
    (tmp_path / "rng").write_bytes(b"x" * 10)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(SourceUnavailable):
            Mixer.from_urls([f"file://{tmp_path}/rng", f"file://{tmp_path}/missing"])
    assert len(os.listdir("/proc/self/fd")) <= before


def test_one_alarm_discards_the_batch_and_reruns_the_startup_test_and_a_second_stops_the_draw():
    burst = bytes([7]) * 100
    stream = shake("good", 6000) + burst + shake("more", 20_000) + burst + shake("rest", 100_000)
    alarms: list[HRNGError] = []
    recovered: list[HRNGError] = []
    mixer = Mixer([BytesSource(stream, url="serial:///dev/fake", chunk=512)], on_alarm=alarms.append,
                  os_random=zeros, on_recovered=recovered.append)
    out = mixer.read(3584)
    assert out == stream[STARTUP_SAMPLES : STARTUP_SAMPLES + 3584]
    # The first alarm: the batch being drawn is thrown away, the start-up test runs again, the draw goes on.
    batch = mixer.read(10_000)
    (first,) = recovered
    assert alarms == [] and first.test == "RCT" and 6000 <= first.sample < 6000 + 6
    # The rest of the failing read is dropped with it, and the 1024 samples after go to the start-up test.
    at = stream.find(batch[:64])
    assert at >= first.sample + 1 + STARTUP_SAMPLES and batch == stream[at : at + 10_000]
    assert stream[4608 : 4608 + 64] not in batch  # what was read before the alarm is not handed out
    assert "the start-up test runs again" in first.recovered()
    # A second alarm within the same draw stops it, with both alarms shown.
    with pytest.raises(HealthTestFailure) as info:
        mixer.read(20_000)
    assert alarms == [info.value] and info.value.first is first and info.value.test == "RCT"
    assert "a second alarm in one draw" in str(info.value) and f"sample {first.sample}" in str(info.value)
    with pytest.raises(SourceHalted):
        mixer.read(1)
    assert alarms == [info.value] and len(recovered) == 1
    assert mixer.produced == 3584 + 10_000
    mixer.close()


def test_one_failing_source_of_two_stops_the_mixer():
    good = shake("good2", 50_000)
    bad = shake("bad2", 3000) + bytes([1, 2]) * 20_000  # two values alternating: the APT fires
    alarms: list[HRNGError] = []
    with Mixer([BytesSource(good), BytesSource(bad, url="serial:///dev/bad")], on_alarm=alarms.append) as mixer:
        with pytest.raises(HealthTestFailure) as info:
            mixer.read(40_000)
    assert info.value.test == "APT" and info.value.source == "serial:///dev/bad"
    assert len(alarms) == 1


def test_mixer_is_safe_to_share_between_threads():
    data = shake("threads", 1 << 20)
    with Mixer([BytesSource(data, repeat=True)]) as mixer:
        outs: list[bytes] = []

        def worker() -> None:
            for _ in range(20):
                outs.append(mixer.read(4096))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(outs) == 80 and len(set(outs)) == 80
    assert mixer.produced == 80 * 4096


def test_pad_random_without_urls_is_the_os_csprng_and_says_so(capsys):
    with pad_random([]) as random_bytes:
        assert random_bytes is os_stream  # the OS CSPRNG, stretched (tests/test_hrng_osstream.py)
    assert "CSPRNG, not a hardware RNG" in capsys.readouterr().err


def test_pad_random_with_urls_says_where_bytes_come_from(tmp_path, capsys):
    (tmp_path / "rng").write_bytes(shake("pad-random", 10_000))
    with pad_random([f"file://{tmp_path}/rng"]) as random_bytes:
        assert len(random_bytes(4096)) == 4096
    assert f"pad bytes come from file://{tmp_path}/rng XOR the OS CSPRNG" in capsys.readouterr().err
