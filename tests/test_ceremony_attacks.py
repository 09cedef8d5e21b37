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
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device.storage.padstore import PadStore
from onetimechat.errors import OTCError
from provisioning.agree import Agreement, agree, joiner_sas
from provisioning.ceremony import PROTOCOL, Ceremony
from provisioning.errors import CeremonyBroken
from provisioning.link import HOST, JOIN
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
            # Then each side's sealed identity proof, passed on as it is (both send theirs first).
            for src, dst in ((proxy_h, proxy_j), (proxy_j, proxy_h)):
                dst.sendall(read_frame(src))
        except (OSError, ConnectionError):
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
    reveal_h = read_frame(mitm_h)  # the host's reveal: now he knows the host's string
    # The string the host shows: the transcript of what it sent and received (it would go on to ask for an
    # identity proof the man in the middle could make with his own key; the string is what he must match).
    target_sas = joiner_sas(commit_h[5:], hello_m, reveal_h[5:], PROTOCOL)

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
        equal += sas == target_sas
    assert accepted == 0 and equal == 0
    # His one honest guess, the exact bytes he committed to, gives an unrelated string.
    assert joiner_sas(commit_m, hello_j[5:], reveal_m, PROTOCOL) != target_sas
    for sock in (host_end, join_end, mitm_h, mitm_j):
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    host.join(30)
    joiner.join(30)
    assert not isinstance(results.get(HOST), Agreement)


# -- a joining device that tries to choose the pad ----------------------------------------


def hkdf(key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(key)


class HostileJoiner:
    """A joining device written from the protocol's description, free to break its rules."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.counters = [0, 0]  # sent, received

    def frame(self, kind: int, body: bytes) -> None:
        self.sock.sendall(struct.pack(">IB", len(body), kind) + body)

    def agree(self) -> None:
        secret = X25519PrivateKey.generate()
        identity = Ed25519PrivateKey.generate()
        commit = read_frame(self.sock)[5:]
        hello = json.dumps({"device_id": os.urandom(16).hex(), "name": "mallory", "nonce": os.urandom(16).hex(),
                            "pk": secret.public_key().public_bytes_raw().hex(), "protocol": "otc-pairing-v4",
                            "role": "join", "identity": identity.public_key().public_bytes_raw().hex()}).encode()
        self.frame(1, hello)
        reveal = read_frame(self.sock)[5:]
        transcript = hashlib.sha256(b"otc ceremony v3 transcript\x00" + b"".join(
            len(p).to_bytes(4, "big") + p for p in (commit, hello, reveal))).digest()
        peer = X25519PublicKey.from_public_bytes(bytes.fromhex(json.loads(reveal)["pk"]))
        master = hkdf(secret.exchange(peer) + transcript, "otc ceremony v3 master")
        self.send_key = AESGCM(hkdf(master, "otc ceremony v3 join to host"))
        self.recv_key = AESGCM(hkdf(master, "otc ceremony v3 host to join"))
        # Each side signs the transcript with its identity key (this joiner's id is not that key's hash: it
        # is a device from before identities, as far as the host can tell).
        signed = b"otc ceremony v4 identity\x00otc-pairing-v4\x00join\x00" + transcript
        self.send({"t": "identity", "sig": identity.sign(signed).hex()})
        assert self.recv()[0]["t"] == "identity"

    def _nonce(self, direction: int) -> bytes:
        nonce = self.counters[direction].to_bytes(12, "big")
        self.counters[direction] += 1
        return nonce

    def send(self, message: dict, payload: bytes = b"") -> None:
        """A sealed frame (type 4); a "chunk" message goes as a share frame (type 5) instead."""
        head = json.dumps(message).encode()
        if message.get("t") == "chunk":
            sealed = self.send_key.encrypt(self._nonce(0), head, SHARE_AAD + payload)
            self.frame(5, struct.pack(">I", len(sealed)) + sealed + payload)
            return
        self.frame(4, self.send_key.encrypt(self._nonce(0), struct.pack(">I", len(head)) + head + payload,
                                            b"otc ceremony frame"))

    def recv(self) -> tuple[dict, bytes]:
        frame = read_frame(self.sock)
        kind, body = frame[4], frame[5:]
        if kind == 5:  # a share frame: the head sealed, the payload (a sealed share) only authenticated
            return share_frame(self.recv_key, self._nonce(1), body)
        plain = self.recv_key.decrypt(self._nonce(1), body, b"otc ceremony frame")
        (n,) = struct.unpack(">I", plain[:4])
        return json.loads(plain[4 : 4 + n]), plain[4 + n :]


SHARE_AAD = b"otc ceremony share frame\x00"


def share_frame(key: AESGCM, nonce: bytes, body: bytes) -> tuple[dict, bytes]:
    """A share frame's message and payload, or InvalidTag."""
    (n,) = struct.unpack(">I", body[:4])
    payload = body[4 + n :]
    return json.loads(key.decrypt(nonce, body[4 : 4 + n], SHARE_AAD + payload)), payload


def seal_share(pad_id: bytes, role: str, index: int, key: bytes, share: bytes) -> tuple[bytes, bytes]:
    """A share sealed and committed to as the protocol describes: (sealed bytes, commitment)."""
    context = pad_id + role.encode() + index.to_bytes(8, "big")
    sealed = AESGCM(key).encrypt(bytes(12), share, b"otc pairing v3 share\x00" + context)
    return sealed, hashlib.sha256(b"otc pairing v3 share key\x00" + context + key).digest()


def open_host_share(pad_id: bytes, index: int, key: bytes, sealed: bytes) -> bytes:
    context = pad_id + b"host" + index.to_bytes(8, "big")
    return AESGCM(key).decrypt(bytes(12), sealed, b"otc pairing v3 share\x00" + context)


CHUNK = 64 * 1024


def hosting(home: Path, sock: socket.socket, size: int, outcome: dict) -> threading.Thread:
    """The host's device running the real ceremony on ``sock``; its record or error goes into ``outcome``."""

    def host() -> None:
        with PadStore(home) as store:
            wire = Wire(sock)
            try:
                outcome["host"] = Ceremony(store, HOST, random_bytes=os.urandom, compare=lambda sas: True,
                                           size=size, chunk=CHUNK).run(wire)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                outcome["host"] = exc
            finally:
                wire.close()

    thread = threading.Thread(target=host)
    thread.start()
    return thread


@pytest.mark.parametrize("strategy", ["honest-control", "another-key", "mirror", "no-commitment"])
def test_a_joiner_answering_with_chosen_xor_host_share_is_caught_and_no_such_pad_is_stored(tmp_path, strategy):
    PadStore.init(tmp_path / "host", "hosting").close()
    host_sock, evil_sock = socket.socketpair()
    host_sock.settimeout(10)
    evil_sock.settimeout(10)
    outcome: dict[str, object] = {}
    thread = hosting(tmp_path / "host", host_sock, 4 * CHUNK, outcome)
    evil = HostileJoiner(evil_sock)
    evil.agree()
    evil.send({"t": "sas", "ok": True})
    assert evil.recv()[0]["ok"] is True
    evil.send({"t": "holding", "pads": {}})  # nothing left over from an earlier ceremony
    assert evil.recv()[0] == {"t": "holding", "pads": {}}
    evil.send({"t": "held", "pads": []})
    assert evil.recv()[0] == {"t": "held", "pads": []}
    offer, _ = evil.recv()
    pad_id = bytes.fromhex(offer["pad_id"])
    evil.send({"t": "accept", "resume_from": 0})
    chosen = hashlib.shake_256(b"the pad mallory wants").digest(CHUNK)

    # It wants the host's share 0 before it gives its own: the host sends its shares, sealed, and no key.
    host_chunks: dict[int, tuple[bytes, bytes]] = {}
    evil_sock.settimeout(1.0)
    try:
        while True:
            message, data = evil.recv()
            assert message["t"] == "chunk", "the host revealed something before the joiner committed"
            host_chunks[message["i"]] = (bytes.fromhex(message["c"]), data)
    except TimeoutError:
        pass
    evil_sock.settimeout(10)
    assert 0 in host_chunks
    # So it must commit first.
    mine_key = os.urandom(32)
    committed_share = os.urandom(CHUNK)
    sealed, commitment = seal_share(pad_id, "join", 0, mine_key, committed_share)
    if strategy == "mirror":  # the host's own sealed share and commitment, played back as the joiner's
        commitment, sealed = host_chunks[0]
    if strategy == "no-commitment":  # its "share" in the clear, to be fixed later
        sealed, commitment = bytes(CHUNK + 16), bytes(32)
    evil.send({"t": "chunk", "i": 0, "c": commitment.hex()}, sealed)
    while True:
        message, data = evil.recv()
        if message["t"] == "key" and message["i"] == 0:
            host_key = bytes.fromhex(message["k"])
            break
    host_share = open_host_share(pad_id, 0, host_key, host_chunks[0][1])
    wanted = bytes(a ^ b for a, b in zip(chosen, host_share))  # its share would have to be this
    if strategy == "honest-control":
        evil.send({"t": "key", "i": 0, "k": mine_key.hex()})
        message, _ = evil.recv()
        while message["t"] != "verify":
            message, _ = evil.recv()
        assert message["i"] == 0  # the host took a share kept to its commitment
        evil_sock.close()
        thread.join(30)
        assert isinstance(outcome["host"], OTCError)  # the joiner left: no pad
    else:
        # Whatever key it reveals, its share is the one fixed before it saw the host's: it tries its best.
        key = host_key if strategy == "mirror" else os.urandom(32)
        evil.send({"t": "key", "i": 0, "k": key.hex()}, wanted)
        thread.join(30)
        result = outcome["host"]
        assert isinstance(result, OTCError) and "commitment" in str(result), repr(result)
        evil_sock.close()
    assert not thread.is_alive()
    with PadStore(tmp_path / "host") as store:
        assert store.pads() == []
    for path in (tmp_path / "host").rglob("*"):
        if path.is_file():
            assert chosen[:4096] not in path.read_bytes(), path


# -- a link that tampers with the shares in transit --------------------------------------------------


def _flip(frame: bytes, at: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 0x01]) + frame[at + 1 :]


def _share_frame_parts(frame: bytes) -> tuple[bytes, bytes]:
    """A share frame's ``header | len(sealed head) | sealed head`` and its payload (the sealed share)."""
    (n,) = struct.unpack(">I", frame[5:9])
    return frame[: 9 + n], frame[9 + n :]


def _head_length(frame: bytes, change: int) -> bytes:
    return frame[:5] + struct.pack(">I", struct.unpack(">I", frame[5:9])[0] + change) + frame[9:]


SHARE_TAMPERING = {  # what the proxy does to the second share frame in one direction (the first is kept)
    "payload-byte": lambda kept, frame: [_flip(frame, len(frame) - 100)],
    "payload-tag": lambda kept, frame: [_flip(frame, len(frame) - 1)],  # the share's own GCM tag
    "head-byte": lambda kept, frame: [_flip(frame, 12)],
    "head-length-down": lambda kept, frame: [_head_length(frame, -1)],  # the share a byte longer
    "head-length-up": lambda kept, frame: [_head_length(frame, +1)],
    "payload-of-another": lambda kept, frame: [_share_frame_parts(frame)[0] + _share_frame_parts(kept)[1]],
    "retyped-sealed": lambda kept, frame: [frame[:4] + bytes([4]) + frame[5:]],
    "dropped": lambda kept, frame: [],
    "replayed": lambda kept, frame: [kept],  # the first share frame again, in place of the second
    "repeated": lambda kept, frame: [frame, frame],
    "swapped": None,  # sent after the frame that follows it
}


def cutter(ends: tuple[socket.socket, socket.socket]):
    """What each of a proxy's two pumps calls when it stops: the link is cut both ways, and the proxy's
    sockets are closed once both pumps have stopped."""
    done = []

    def cut() -> None:
        for sock in ends:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        done.append(1)
        if len(done) == 2:  # both pumps have stopped
            for sock in ends:
                sock.close()

    return cut


def tampering_connect(direction: str, how: str):
    """The joiner's way to the host through a proxy that does ``how`` to the second share frame (type 5,
    framed as docs/pairing.md step 4 says) going ``direction``, and passes everything else."""

    def connect(address):
        upstream = socket.create_connection(address)
        joiner_end, proxy_end = socket.socketpair()
        cut = cutter((upstream, proxy_end))

        def pump(src: socket.socket, dst: socket.socket, tamper: bool) -> None:
            shares: list[bytes] = []
            held: bytes | None = None
            try:
                while True:
                    frame = read_frame(src)
                    out = [frame]
                    if tamper and frame[4] == 5:
                        shares.append(frame)
                        if len(shares) == 2:
                            if how == "swapped":
                                held, out = frame, []
                            else:
                                out = SHARE_TAMPERING[how](shares[0], frame)
                    elif held is not None:
                        out, held = [frame, held], None
                    for piece in out:
                        dst.sendall(piece)
            except OSError:
                pass
            finally:
                cut()

        for src, dst, name in ((upstream, proxy_end, "h2j"), (proxy_end, upstream, "j2h")):
            threading.Thread(target=pump, args=(src, dst, name == direction), daemon=True).start()
        return joiner_end

    return connect


@pytest.mark.parametrize("how", sorted(SHARE_TAMPERING))
@pytest.mark.parametrize("direction", ["h2j", "j2h"])
def test_a_share_frame_changed_dropped_replayed_or_reordered_on_the_link_is_caught(tmp_path, direction, how):
    from tests.test_provisioning import homes, run_pair

    a, b = homes(tmp_path, "alice", "bob")
    host, join = run_pair(a, b, 6 * CHUNK, chunk=CHUNK, connect=tampering_connect(direction, how))
    receiver = join if direction == "h2j" else host
    assert isinstance(host, OTCError) and isinstance(join, OTCError), (host, join)
    # Caught by the tag (or, a share made longer than a chunk, by its size) before a byte of it is used.
    assert isinstance(receiver, CeremonyBroken), repr(receiver)
    assert "failed authentication" in str(receiver) or (how == "head-length-down" and "oversized" in str(receiver))
    assert holdings(a) == {} and holdings(b) == {}


# -- a link that drops a frame of the finish, then the owners run the ceremony again -------------


def cutting_connect(drop: tuple[str, int] | None, counts: dict[str, int], cut_at_drop: bool = True):
    """The joiner's way to the host through a proxy that passes whole frames and, at ``drop`` (direction,
    frame number), drops that frame and cuts the link both ways (or, ``cut_at_drop`` false, drops just
    that frame and passes the rest). It counts the frames it passed."""

    def connect(address):
        upstream = socket.create_connection(address)
        joiner_end, proxy_end = socket.socketpair()
        cut = cutter((upstream, proxy_end))

        def pump(src: socket.socket, dst: socket.socket, direction: str) -> None:
            n = 0
            try:
                while True:
                    frame = read_frame(src)
                    if drop == (direction, n):
                        drop_now = True
                        if cut_at_drop:
                            break
                    else:
                        drop_now = False
                    if not drop_now:
                        dst.sendall(frame)
                    n += 1
            except OSError:
                pass
            finally:
                counts[direction] = n
                cut()

        for args in ((upstream, proxy_end, "h2j"), (proxy_end, upstream, "j2h")):
            threading.Thread(target=pump, args=args, daemon=True).start()
        return joiner_end

    return connect


def holdings(home: Path) -> dict[bytes, bool]:
    with PadStore(home) as store:
        return {p.pad_id: bool(store._read("SELECT confirmed FROM pads WHERE pad_id = ?", (p.pad_id,))[0][0])
                for p in store.pads()}


FINISH = [("h2j", -2), ("h2j", -1), ("j2h", -2), ("j2h", -1)]  # each side's "final", then its "stored" proof


@pytest.mark.parametrize("cut", [True, False], ids=["then-cut", "only"])
@pytest.mark.parametrize("drop", FINISH, ids=[f"{d}{i}" for d, i in FINISH])
def test_dropping_any_frame_of_the_finish_then_pairing_again_ends_with_the_same_pad_on_both_or_neither(
        tmp_path, drop, cut):
    from device.engine import Device
    from device.errors import PadUnconfirmed
    from tests.test_provisioning import homes, run_pair

    size = 6 * CHUNK
    # An honest run through the same proxy counts each direction's frames.
    counts: dict[str, int] = {}
    a0, b0 = homes(tmp_path, "a0", "b0")
    run_pair(a0, b0, size, chunk=CHUNK, connect=cutting_connect(None, counts))
    direction, back = drop
    a, b = homes(tmp_path, "alice", "bob")
    host, join = run_pair(a, b, size, chunk=CHUNK, connect=cutting_connect((direction, counts[direction] + back),
                                                                           {}, cut))
    assert isinstance(host, Exception) or isinstance(join, Exception)
    for result in (host, join):
        if isinstance(result, Exception):
            assert isinstance(result, OTCError), repr(result)

    # Between the cut and the next ceremony: a pad is usable only where the peer holds it too.
    held = {"alice": holdings(a), "bob": holdings(b)}
    for me, peer, home, contact in (("alice", "bob", a, "bob"), ("bob", "alice", b, "alice")):
        for pad_id, confirmed in held[me].items():
            if confirmed:
                assert pad_id in held[peer], f"{me} may send on a pad {peer} lacks"
        if held[me] and not any(held[me].values()):
            with Device.open(home) as device, pytest.raises(PadUnconfirmed):
                device.package(contact, b"too early")
    cut_pads = set(held["alice"]) | set(held["bob"])
    cut_pads |= {bytes.fromhex(p.name.split(".")[0]) for p in (a / "pads").glob("*.pad.partial")}

    # The owners pair again: the same pad ends on both devices, or on neither.
    host, join = run_pair(a, b, size, chunk=CHUNK)
    assert not isinstance(host, Exception) and not isinstance(join, Exception), (host, join)
    assert host[0].pad_id == join[0].pad_id and host[1] == join[1]
    after = {"alice": holdings(a), "bob": holdings(b)}
    assert set(after["alice"]) == set(after["bob"]) and all(after["alice"].values()) and all(after["bob"].values())
    for pad_id in cut_pads:
        assert (pad_id in after["alice"]) == (pad_id in after["bob"])
    for pad_id in after["alice"]:
        assert (a / "pads" / f"{pad_id.hex()}.pad").read_bytes() == (b / "pads" / f"{pad_id.hex()}.pad").read_bytes()
    assert not list(a.glob("pads/*.partial")) and not list(b.glob("pads/*.partial"))
    # And messages open both ways.
    with Device.open(a) as alice, Device.open(b) as bob:
        assert bob.unpackage(alice.package("bob", b"to bob").package).plaintext == b"to bob"
        assert alice.unpackage(bob.package("alice", b"to alice").package).plaintext == b"to alice"


def test_after_a_lost_proof_the_peers_first_valid_message_makes_the_pad_usable(tmp_path):
    from device.engine import Device
    from device.errors import PadUnconfirmed
    from tests.test_provisioning import homes, run_pair

    counts: dict[str, int] = {}
    a0, b0 = homes(tmp_path, "a0", "b0")
    run_pair(a0, b0, 4 * CHUNK, chunk=CHUNK, connect=cutting_connect(None, counts))
    a, b = homes(tmp_path, "alice", "bob")
    run_pair(a, b, 4 * CHUNK, chunk=CHUNK, connect=cutting_connect(("h2j", counts["h2j"] - 1), {}, False))
    assert list(holdings(a).values()) == [True] and list(holdings(b).values()) == [False]  # bob lost the proof
    with Device.open(a) as alice, Device.open(b) as bob:
        with pytest.raises(PadUnconfirmed):
            bob.package("alice", b"not yet")
        package = alice.package("bob", b"first").package
        with pytest.raises(Exception):  # noqa: B017 - a forged copy proves nothing and confirms nothing
            bob.unpackage(package[:-1] + bytes([package[-1] ^ 1]))
        assert list(holdings(b).values()) == [False]
        assert bob.unpackage(package).plaintext == b"first"
        assert list(holdings(b).values()) == [True]
        assert alice.unpackage(bob.package("alice", b"now").package).plaintext == b"now"


# -- the same for attribute-key grants -------------------------------------------------------------


def run_grant(auth: Path, member: Path, attributes: str, connect):
    from device.abe.grant import grant_host, grant_join

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    results: dict[str, object] = {}

    def side(role: str, sock_factory) -> None:
        try:
            sock = sock_factory()
            sock.settimeout(30)
            wire = Wire(sock)
            try:
                if role == HOST:
                    with PadStore(auth) as store:
                        results[role] = grant_host(store, wire, attributes, lambda view: True)
                else:
                    with PadStore(member) as store:
                        results[role] = grant_join(store, wire, lambda view: True)
            finally:
                wire.close()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[role] = exc

    threads = [threading.Thread(target=side, args=(HOST, lambda: listener.accept()[0])),
               threading.Thread(target=side, args=(JOIN, lambda: connect(("127.0.0.1", port))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    listener.close()
    return results[HOST], results[JOIN]


def grants(auth: Path, member: Path) -> tuple[dict[bytes, bool], dict[bytes, bool]]:
    """(the authority's issued records, the member's keys): key id -> confirmed."""
    from device.abe.store import AbeKeys

    with PadStore(auth) as a, PadStore(member) as m:
        authority_id = AbeKeys(a).master().public.authority_id
        issued = {k: v[0] for k, v in AbeKeys(a).grants_with(m.device_id, as_authority=True).items()}
        held = {k: v[0] for k, v in AbeKeys(m).grants_with(authority_id, as_authority=False).items()}
    return issued, held


GRANT_FINISH = [("h2j", -2), ("j2h", -1), ("h2j", -1)]  # the key, the member's "stored", the authority's "confirmed"


@pytest.mark.parametrize("cut", [True, False], ids=["then-cut", "only"])
@pytest.mark.parametrize("drop", GRANT_FINISH, ids=["key", "stored", "confirmed"])
def test_dropping_any_frame_of_a_grants_finish_then_granting_again_ends_with_the_grant_on_both_or_neither(
        tmp_path, drop, cut):
    from device.abe.grant import Granted
    from device.abe.store import AbeKeys
    from tests.test_provisioning import homes

    auth, member, auth0, member0 = homes(tmp_path, "campus", "alice", "campus0", "alice0")
    for home in (auth, auth0):
        with PadStore(home) as store:
            AbeKeys(store).become_authority()
    counts: dict[str, int] = {}
    first = run_grant(auth0, member0, "STAFF", cutting_connect(None, counts))
    assert all(isinstance(r, Granted) for r in first) and first[0].fingerprint == first[1].fingerprint
    direction, back = drop
    run_grant(auth, member, "STAFF", cutting_connect((direction, counts[direction] + back), {}, cut))
    issued, held = grants(auth, member)
    # A member uses a key only once the authority is known to have it recorded; and the reverse.
    for kid, confirmed in held.items():
        if confirmed:
            assert kid in issued
    for kid, confirmed in issued.items():
        if confirmed:
            assert kid in held
    with PadStore(member) as store:
        usable = {k.key_id for k in AbeKeys(store).member_keys()}
    assert usable == {k for k, ok in held.items() if ok}
    cut_keys = set(issued) | set(held)

    # Granting again: the grant ends on both devices, or on neither, and both screens show one fingerprint.
    host, join = run_grant(auth, member, "STAFF", socket.create_connection)
    assert isinstance(host, Granted) and isinstance(join, Granted), (host, join)
    assert host.key_id == join.key_id and host.fingerprint == join.fingerprint
    issued, held = grants(auth, member)
    assert issued == held and all(issued.values())
    for kid in cut_keys:
        assert (kid in issued) == (kid in held)
    with PadStore(auth) as a, PadStore(member) as m:
        sealed = AbeKeys(a).encapsulate("campus", "STAFF")
        assert AbeKeys(m).decapsulate(sealed.ciphertext.encode()) == sealed.key


def test_a_joiner_sending_shares_far_ahead_of_its_keys_cannot_fill_the_hosts_memory(tmp_path):
    PadStore.init(tmp_path / "host", "hosting").close()
    host_sock, evil_sock = socket.socketpair()
    host_sock.settimeout(10)
    outcome: dict[str, object] = {}
    thread = hosting(tmp_path / "host", host_sock, 64 * CHUNK, outcome)
    evil = HostileJoiner(evil_sock)
    evil.agree()
    evil.send({"t": "sas", "ok": True})
    evil.recv()
    evil.send({"t": "holding", "pads": {}})
    evil.recv()
    evil.send({"t": "held", "pads": []})
    evil.recv()
    evil.recv()  # the offer
    evil.send({"t": "accept", "resume_from": 0})

    def drain() -> None:  # it reads (and drops) all the host sends, so the host is never held up
        try:
            while True:
                read_frame(evil_sock)
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    try:
        for i in range(64):  # every share, never a key
            evil.send({"t": "chunk", "i": i, "c": os.urandom(32).hex()}, os.urandom(CHUNK + 16))
    except OSError:
        pass  # the host hung up
    thread.join(30)
    evil_sock.close()
    result = outcome["host"]
    assert isinstance(result, OTCError) and "too far ahead" in str(result), repr(result)


def test_a_low_order_public_key_in_a_hello_is_a_malformed_hello_not_a_crash(stores):
    """An outside review: an all-zero X25519 key in the HELLO escaped as a raw ValueError (internal error)."""
    import re

    def zero_key(index: int, frame: bytes) -> bytes:
        if index != 1:
            return frame
        return re.sub(rb'("pk":\s*")([0-9a-f]{64})"', lambda m: m.group(1) + b"0" * 64 + b'"', frame)

    host, join = run_agreement(stores, zero_key)
    assert isinstance(host, CeremonyBroken) and "malformed hello" in str(host)  # the joiner learns at its next frame
