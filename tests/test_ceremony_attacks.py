"""Attacks on the in-person ceremonies (issue 17), each by a hostile proxy or peer written here.

The attackers speak the wire format themselves (a frame is ``length (4) | type (1) | body``, the
agreement bodies JSON); they use no provisioning code. The code under attack is the real one, over
real sockets.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import struct
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device.storage.padstore import PadStore
from onetimechat.errors import OTCError
from provisioning.agree import HOST, JOIN, Agreement, agree, joiner_sas
from provisioning.ceremony import PROTOCOL
from provisioning.errors import CeremonyBroken
from provisioning.wire import Wire

AGREEMENT_FRAMES = 3  # COMMIT (host to joiner), HELLO (joiner to host), REVEAL (host to joiner)
TIMEOUT_S = 1.0


def read_frame(sock: socket.socket) -> bytes:
    """One whole frame, header included, as it came (the attacker's own framing)."""
    head = _read(sock, 5)
    (length,) = struct.unpack(">I", head[:4])
    return head + _read(sock, length)


def _read(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = sock.recv(n - len(out))
        if not got:
            raise ConnectionError("closed")
        out += got
    return out


def reframe(frame: bytes, body: bytes) -> bytes:
    """``frame``'s type with a new body and the length that fits it (a careful attacker)."""
    return struct.pack(">I", len(body)) + frame[4:5] + body


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base: Path = tmp_path_factory.mktemp("agreement")
    out = []
    for name in ("hosting", "joining"):
        PadStore.init(base / name, name).close()
        out.append(PadStore(base / name))
    yield out
    for store in out:
        store.close()


def run_agreement(stores, tamper) -> tuple[Agreement | Exception, Agreement | Exception]:
    """Host and joiner agree through a proxy; ``tamper(index, frame)`` returns what the proxy passes on
    for the ``index``-th agreement frame (0: COMMIT, 1: HELLO, 2: REVEAL)."""
    host_end, proxy_h = socket.socketpair()
    join_end, proxy_j = socket.socketpair()
    for sock in (host_end, proxy_h, join_end, proxy_j):
        sock.settimeout(TIMEOUT_S)
    results: dict[str, Agreement | Exception] = {}

    def side(role: str, store: PadStore, sock: socket.socket) -> None:
        wire = Wire(sock)
        try:
            results[role] = agree(wire, role, store, os.urandom, PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[role] = exc
        finally:
            wire.close()

    def proxy() -> None:
        try:
            for index, (src, dst) in enumerate([(proxy_h, proxy_j), (proxy_j, proxy_h), (proxy_h, proxy_j)]):
                dst.sendall(tamper(index, read_frame(src)))
        except OSError:
            pass
        finally:
            for sock in (proxy_h, proxy_j):
                sock.close()

    threads = [threading.Thread(target=side, args=(HOST, stores[0], host_end)),
               threading.Thread(target=side, args=(JOIN, stores[1], join_end)),
               threading.Thread(target=proxy)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results[HOST], results[JOIN]


def test_an_honest_proxy_leaves_the_strings_equal(stores):
    host, join = run_agreement(stores, lambda index, frame: frame)
    assert isinstance(host, Agreement) and isinstance(join, Agreement)
    assert host.sas == join.sas and host.transcript == join.transcript


def _outcome_is_safe(host, join, index: int) -> None:
    for result in (host, join):
        if isinstance(result, Exception):
            assert isinstance(result, OTCError), repr(result)  # a clear one-line error, never a crash
    if isinstance(host, Agreement) and isinstance(join, Agreement):
        assert host.sas != join.sas
    if index != 1:
        # A changed COMMIT or REVEAL is caught by the joiner before it shows a string, or changes it.
        assert isinstance(join, Exception) or (isinstance(host, Exception) or join.sas != host.sas)


def test_every_byte_of_every_agreement_message_changed_is_caught_or_splits_the_strings(stores):
    sizes = []
    run_agreement(stores, lambda index, frame: sizes.append(len(frame)) or frame)
    assert len(sizes) == AGREEMENT_FRAMES
    tried = 0
    for index, size in enumerate(sizes):
        for position in range(size):  # the header's length and type bytes too
            def flip(i, frame, index=index, position=position):
                if i != index:
                    return frame
                return frame[:position] + bytes([frame[position] ^ 0x01]) + frame[position + 1:]

            _outcome_is_safe(*run_agreement(stores, flip), index)
            tried += 1
    assert tried == sum(sizes)


@pytest.mark.parametrize("insert", [b" ", b"\n", b"\t", b"\r\n"])
def test_whitespace_slipped_anywhere_into_an_agreement_message_is_caught_or_splits_the_strings(stores, insert):
    sizes = []
    run_agreement(stores, lambda index, frame: sizes.append(len(frame)) or frame)
    for index, size in enumerate(sizes):
        for position in range(5, size + 1):  # anywhere in the body, trailing included; the length follows
            def slip(i, frame, index=index, position=position):
                if i != index:
                    return frame
                body = frame[5:]
                at = position - 5
                return reframe(frame, body[:at] + insert + body[at:])

            _outcome_is_safe(*run_agreement(stores, slip), index)


# -- a man in the middle with keys of his own, grinding what he reveals ------------------


COMMIT_LABEL = b"otc ceremony v3 commitment\x00"  # the attacker knows the protocol


def whitespace_variants(body: bytes, count: int) -> list[bytes]:
    """``count`` distinct encodings of the JSON ``body`` with whitespace slipped in: same meaning."""
    text = body.decode()
    # Where JSON allows whitespace: after { , : and before } and at the end (outside strings only).
    cuts, in_string = [], False
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            in_string = not in_string
        if not in_string and ch in "{,:":
            cuts.append(i + 1)
        if not in_string and ch == "}":
            cuts.append(i)
    cuts.append(len(text))
    choices = ["", " ", "\t", "\n", "\r"]
    out = []
    for combo in itertools.islice(itertools.product(choices, repeat=len(cuts)), 1, count + 1):
        pieces, last = [], 0
        for cut, ws in zip(cuts, combo):
            pieces.append(text[last:cut] + ws)
            last = cut
        pieces.append(text[last:])
        out.append("".join(pieces).encode())
    return out


def test_a_man_in_the_middle_grinding_100000_variants_never_matches_the_strings(stores):
    """The attack that beat version 1: fix his keys with both sides, then grind the bytes he reveals to
    the joiner until its string equals the host's. Version 3 accepts only the exact committed bytes."""
    host_end, mitm_h = socket.socketpair()
    join_end, mitm_j = socket.socketpair()
    results: dict[str, Agreement | Exception] = {}

    def side(role: str, store: PadStore, sock: socket.socket) -> None:
        wire = Wire(sock)
        try:
            results[role] = agree(wire, role, store, os.urandom, PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[role] = exc

    host = threading.Thread(target=side, args=(HOST, stores[0], host_end))
    host.start()
    commit_h = read_frame(mitm_h)
    # To the joiner he poses as the host: his own key, committed before he sees the joiner's hello.
    his_key = X25519PrivateKey.generate()
    reveal_m = json.dumps({"device_id": os.urandom(16).hex(), "name": "hosting", "nonce": os.urandom(16).hex(),
                           "pk": his_key.public_key().public_bytes_raw().hex(), "protocol": PROTOCOL,
                           "role": HOST}, separators=(",", ":"), sort_keys=True).encode()
    commit_m = json.dumps({"commit": hashlib.sha256(COMMIT_LABEL + reveal_m).hexdigest(), "protocol": PROTOCOL},
                          separators=(",", ":"), sort_keys=True).encode()
    mitm_j.sendall(reframe(commit_h, commit_m))
    joiner = threading.Thread(target=side, args=(JOIN, stores[1], join_end))
    joiner.start()
    hello_j = read_frame(mitm_j)
    # To the host he poses as the joiner.
    hello_m = json.dumps({"device_id": os.urandom(16).hex(), "name": "joining", "nonce": os.urandom(16).hex(),
                          "pk": X25519PrivateKey.generate().public_key().public_bytes_raw().hex(),
                          "protocol": PROTOCOL, "role": JOIN}, separators=(",", ":"), sort_keys=True).encode()
    mitm_h.sendall(reframe(hello_j, hello_m))
    read_frame(mitm_h)  # the host's reveal: now he knows the host's string
    host.join(30)
    target = results[HOST]
    assert isinstance(target, Agreement)

    # He knows everything the joiner's string depends on; he grinds what he reveals.
    variants = whitespace_variants(reveal_m, 100_000)
    assert len(set(variants)) == 100_000 and reveal_m not in variants
    assert all(json.loads(v) == json.loads(reveal_m) for v in variants[::997])  # same meaning: v1 took them
    equal = accepted = 0
    for variant in variants:
        try:
            sas = joiner_sas(commit_m, hello_j[5:], variant, PROTOCOL)
        except CeremonyBroken:
            continue
        accepted += 1
        equal += sas == target.sas
    assert accepted == 0 and equal == 0
    # His one honest guess, the exact bytes he committed to, gives an unrelated string.
    assert joiner_sas(commit_m, hello_j[5:], reveal_m, PROTOCOL) != target.sas
    mitm_j.sendall(reframe(commit_h[:4] + bytes([3]), reveal_m))
    joiner.join(30)
    assert isinstance(results[JOIN], Agreement) and results[JOIN].sas != target.sas
    for sock in (host_end, join_end, mitm_h, mitm_j):
        sock.close()
