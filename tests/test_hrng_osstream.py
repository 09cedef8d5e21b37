"""The OS CSPRNG stand-in for bulk pad bytes (hrng.mixer.OSStream)."""

from __future__ import annotations

import itertools
import os
import threading

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hrng import mixer
from hrng.mixer import Mixer, OSStream, os_stream


def keystream(key: bytes, n: int, piece: int) -> bytes:
    """AES-256-CTR under ``key``: nonce j (12 bytes) and counter 2 on for each ``piece`` bytes."""
    return b"".join(Cipher(algorithms.AES(key), modes.CTR(j.to_bytes(12, "big") + (2).to_bytes(4, "big")))
                    .encryptor().update(bytes(min(piece, n - at))) for j, at in enumerate(range(0, n, piece)))


class Small(OSStream):
    """Tiny segments and pieces, so their seams are exercised with little data."""

    SEGMENT = 3 * 8192
    PIECE = 5000


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 1 << 20, (1 << 20) + 17])
def test_gives_exactly_the_bytes_asked_for(n):
    assert len(os_stream(n)) == n


def test_refuses_a_negative_count():
    with pytest.raises(ValueError):
        os_stream(-1)


def test_small_requests_are_os_urandom_itself(monkeypatch):
    monkeypatch.setattr(mixer.os, "urandom", lambda n: b"\x07" * n)
    assert os_stream(100) == b"\x07" * 100
    buf = bytearray(10)
    os_stream.into(buf)
    assert buf == b"\x07" * 10


def test_large_requests_are_aes_ctr_under_a_fresh_os_key_per_segment(monkeypatch):
    counter = itertools.count(1)
    keys: list[bytes] = []

    def fake_urandom(n: int) -> bytes:
        key = bytes([next(counter)]) * n
        keys.append(key)
        return key

    monkeypatch.setattr(mixer.os, "urandom", fake_urandom)
    n = 2 * Small.SEGMENT + 1234  # three segments, the last one short; pieces cross no segment
    out = Small()(n)
    assert len(keys) == 4 and all(len(k) == 32 for k in keys[:3]) and len(keys[3]) == 16
    stream = n - 16
    expected = b"".join(keystream(k, min(Small.SEGMENT, stream - i * Small.SEGMENT), Small.PIECE)
                        for i, k in enumerate(keys[:3]))
    assert out == expected + keys[3]  # the last 16 bytes straight from os.urandom


def test_into_fills_a_slice_in_place_and_nothing_around_it():
    buf = bytearray(b"\xaa" * (4096 + 20000 + 4096))
    Small().into(memoryview(buf)[4096:-4096])
    assert buf[:4096] == b"\xaa" * 4096 and buf[-4096:] == b"\xaa" * 4096
    middle = bytes(buf[4096:-4096])
    assert middle.count(0) < 1000 and middle.count(0xAA) < 1000  # random, not left as it was


def test_segments_and_calls_never_repeat_a_keystream():
    out = Small()(4 * Small.SEGMENT)
    segments = {out[i : i + Small.SEGMENT] for i in range(0, len(out), Small.SEGMENT)}
    assert len(segments) == 4
    assert os_stream(1 << 16) != os_stream(1 << 16)


def test_bytes_look_uniform():
    data = os_stream(1 << 20)
    expected = len(data) / 256
    chi2 = sum((data.count(bytes([b])) - expected) ** 2 / expected for b in range(256))
    assert chi2 < 400  # 255 degrees of freedom: this bound fails for a sound generator about once in 10^8 runs


def test_threads_get_independent_bytes():
    outs: list[bytes] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            chunk = os_stream(1 << 16)
            with lock:
                outs.append(chunk)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(outs)) == 20


def test_the_hardware_mixer_still_xors_in_os_urandom_itself():
    # The stand-in is only for the no-hardware case: a real HRNG's OS half is untouched.
    assert Mixer([], insecure_os_only=True)._os_random is os.urandom
