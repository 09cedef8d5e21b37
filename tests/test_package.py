"""Package format v2 (onetimechat/package.py) against DESIGN.md, "Package format v2".

Known answers come from tests/vectors/package_v2.json, which
tests/vectors/make_package_v2.py builds without importing onetimechat.package or
the cryptography package (its Poly1305 is RFC 8439's arithmetic, written out).
The withdrawn v1 vectors (tests/vectors/package_v1.json) are kept to show that
every OTC1 package is refused with its own error.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from onetimechat import package as pkg
from onetimechat.errors import InvalidPackage, MalformedPackage, WithdrawnFormat
from onetimechat.package import Kind, Package, decode, encode, open_package, parse, seal, xor

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
VECTORS_FILE = VECTORS_DIR / "package_v2.json"
V1_VECTORS = json.loads((VECTORS_DIR / "package_v1.json").read_text(encoding="utf-8"))["vectors"]
DOCUMENT = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
VECTORS = DOCUMENT["vectors"]

U64 = (1 << 64) - 1
MIB = 1 << 20


def det(label: bytes | str, n: int) -> bytes:
    """Deterministic test bytes (never the `random` module)."""
    if isinstance(label, str):
        label = label.encode()
    return hashlib.shake_256(label).digest(n)


def make(
    plaintext: bytes, kind: int = Kind.TEXT, offset: int = 0, label: bytes = b"default"
) -> tuple[bytes, bytes, bytes]:
    """(package, pad_id, segment) for ``plaintext`` with a pinned segment and R (:data:`AUTH`)."""
    pad_id = det(b"pad_id/" + label, 16)
    segment = det(b"segment/" + label, 16 + len(plaintext))
    return seal(kind, pad_id, offset, segment, plaintext, AUTH), pad_id, segment


AUTH = det(b"the sender's R", 16)


def header(kind: int, pad_id: bytes, offset: int, length: int, magic: bytes = b"OTC2") -> bytes:
    return magic + struct.pack(">B16sQI", kind, pad_id, offset, length)


# -- the MAC primitive --------------------------------------------------------------


def test_poly1305_rfc8439_2_5_2() -> None:
    key = bytes.fromhex(
        "85:d6:be:78:57:55:6d:33:7f:44:52:fe:42:d5:06:a8:01:03:80:8a:fb:0d:b2:fd:4a:bf:f6:af:41:49:f5:1b".replace(
            ":", ""
        )
    )
    message = b"Cryptographic Forum Research Group"
    tag = bytes.fromhex("a8:06:1d:c1:30:51:36:c6:c2:2b:8b:af:0c:01:27:a9".replace(":", ""))
    mac = Poly1305(key)
    mac.update(message)
    assert mac.finalize() == tag
    Poly1305.verify_tag(key, message, tag)


# -- known answers ---------------------------------------------------------------------


def test_vector_file_is_documented_and_complete() -> None:
    assert "make_package_v2.py" in DOCUMENT["source"]
    names = {v["name"] for v in VECTORS}
    assert len(names) == len(VECTORS)
    assert {v["kind"] for v in VECTORS} == {1, 2, 3, 4}
    assert {v["sender"] for v in VECTORS} == {"initiator", "responder"}
    assert any(v["plaintext"] == "" and v["offset"] == 16 for v in VECTORS)  # the first segment after R
    assert any(len(bytes.fromhex(v["plaintext"])) >= 300 for v in VECTORS)
    # Segments that end at the split, start at it, and end just below the responder's R.
    assert any(v["offset"] + 16 + len(v["plaintext"]) // 2 == len(v["pad"]) // 4 for v in VECTORS)
    assert any(v["offset"] == len(v["pad"]) // 4 and v["sender"] == "responder" for v in VECTORS)
    assert any(v["offset"] + 16 + len(v["plaintext"]) // 2 == len(v["pad"]) // 2 - 16 for v in VECTORS)
    assert any(v["pad"] == (bytes(range(256)) * 2).hex() and bytes.fromhex(v["plaintext"]) == b"hello" for v in VECTORS)


def test_vector_file_matches_its_generator() -> None:
    """The committed JSON is exactly what the independent script builds."""
    spec = importlib.util.spec_from_file_location("make_package_v2", VECTORS_DIR / "make_package_v2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.vectors() == VECTORS


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_known_answer(vector: dict) -> None:
    pad = bytes.fromhex(vector["pad"])
    pad_id = bytes.fromhex(vector["pad_id"])
    kind, offset = vector["kind"], vector["offset"]
    plaintext = bytes.fromhex(vector["plaintext"])
    expected = bytes.fromhex(vector["package"])
    length = len(plaintext)
    segment = pad[offset : offset + 16 + length]
    assert len(segment) == 16 + length  # the vector's segment lies inside its pad
    lo, hi = pkg.auth_key_range(vector["sender"] == "initiator", len(pad))
    r_key = pad[lo:hi]
    assert lo + 16 == hi and (lo == 0 or hi == len(pad))

    assert seal(kind, pad_id, offset, segment, plaintext, r_key) == expected
    assert len(expected) == 49 + length == pkg.package_length(length)

    parsed = parse(expected)
    assert parsed.kind == kind and isinstance(parsed.kind, Kind)
    assert parsed.pad_id == pad_id
    assert parsed.offset == offset
    assert parsed.length == length
    assert parsed.segment == (offset, offset + 16 + length)
    assert parsed.segment_length == 16 + length == pkg.segment_length(length)
    assert bytes(parsed.authenticated) == expected[: 33 + length]
    assert parsed.tag == expected[-16:]
    assert open_package(parsed, segment, r_key) == plaintext
    assert open_package(parsed, memoryview(pad)[offset : offset + 16 + length], memoryview(pad)[lo:hi]) == plaintext
    # The other direction's R never opens it.
    other_lo, other_hi = pkg.auth_key_range(vector["sender"] != "initiator", len(pad))
    with pytest.raises(InvalidPackage):
        open_package(parsed, segment, pad[other_lo:other_hi])

    assert decode(encode(expected)) == expected
    assert encode(expected) == base64.b64encode(expected).decode("ascii")


# -- round trips ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, MIB),
    seed=st.binary(max_size=8),
    kind=st.sampled_from(list(Kind)),
    offset=st.integers(0, U64),
)
@example(size=0, seed=b"", kind=Kind.TEXT, offset=0)
@example(size=1, seed=b"", kind=Kind.FILE_PART, offset=1)
@example(size=2, seed=b"x", kind=Kind.RECEIPT, offset=U64)
@example(size=MIB - 1, seed=b"", kind=Kind.CONTROL, offset=12345)
@example(size=MIB, seed=b"", kind=Kind.FILE_PART, offset=0)
@example(size=MIB, seed=b"top", kind=Kind.TEXT, offset=U64)
def test_round_trip(size: int, seed: bytes, kind: Kind, offset: int) -> None:
    offset = min(offset, U64 - (16 + size))  # the largest offset whose segment still fits in u64
    plaintext = det(b"plaintext/" + seed, size)
    segment = det(b"segment/" + seed, 16 + size)
    pad_id = det(b"pad_id/" + seed, 16)

    data = seal(kind, pad_id, offset, segment, plaintext, AUTH)
    assert len(data) == 49 + size
    assert data[:4] == b"OTC2"
    assert data[33 : 33 + size] == xor(plaintext, segment[16:])

    wire = encode(data)
    assert decode(wire) == data
    assert decode(wire.encode("ascii") + b"\n") == data

    parsed = parse(data)
    assert (parsed.kind, parsed.pad_id, parsed.offset, parsed.length) == (kind, pad_id, offset, size)
    assert parsed.segment == (offset, offset + 16 + size)
    assert open_package(parsed, segment, AUTH) == plaintext
    assert open_package(parse(bytearray(data)), memoryview(segment), memoryview(AUTH)) == plaintext

    # Another mask (first segment byte changed) or another R never opens it.
    wrong = bytes([segment[0] ^ 1]) + segment[1:]
    with pytest.raises(InvalidPackage):
        open_package(parsed, wrong, AUTH)
    with pytest.raises(InvalidPackage):
        open_package(parsed, segment, bytes([AUTH[0] ^ 1]) + AUTH[1:])


# -- tampering ----------------------------------------------------------------------------


def _field(position: int, length: int) -> str:
    if position < 4:
        return "magic"
    if position == 4:
        return "kind"
    if position < 21:
        return "pad_id"
    if position < 29:
        return "offset"
    if position < 33:
        return "length"
    if position < 33 + length:
        return "ciphertext"
    return "tag"


@pytest.mark.parametrize("kind", list(Kind))
def test_every_single_bit_flip_is_refused(kind: Kind) -> None:
    plaintext = det(b"bit flip message", 20)
    data, _, segment = make(plaintext, kind=kind, offset=4096, label=b"flip")
    assert open_package(parse(data), segment, AUTH) == plaintext
    outcomes: dict[str, set[str]] = {}
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        field = _field(bit // 8, len(plaintext))
        try:
            parsed = parse(bytes(flipped))
        except MalformedPackage:
            outcomes.setdefault(field, set()).add("malformed")
            continue
        # A changed offset/pad_id would select another segment; here the
        # original segment is used, and the tag must fail.
        with pytest.raises(InvalidPackage):
            open_package(parsed, segment, AUTH)
        outcomes.setdefault(field, set()).add("invalid")
    assert outcomes["magic"] == {"malformed"}
    assert outcomes["length"] == {"malformed"}
    for field in ("pad_id", "offset", "ciphertext", "tag"):
        assert outcomes[field] == {"invalid"}, field
    assert outcomes["kind"] <= {"malformed", "invalid"}


def test_tag_failure_is_one_uniform_error() -> None:
    data, _, segment = make(b"uniform", label=b"uniform")
    messages = set()
    for position in (5, 21, 33, len(data) - 1):
        flipped = bytearray(data)
        flipped[position] ^= 0x80
        with pytest.raises(InvalidPackage) as info:
            open_package(parse(bytes(flipped)), segment, AUTH)
        messages.add(str(info.value))
    assert len(messages) == 1


def test_open_with_wrong_segment_length_is_a_value_error() -> None:
    data, _, segment = make(b"abc", label=b"seglen")
    parsed = parse(data)
    for bad in (segment[:-1], segment + b"\x00", b""):
        with pytest.raises(ValueError):
            open_package(parsed, bad, AUTH)
    for bad_key in (AUTH[:-1], AUTH + b"\x00", b""):
        with pytest.raises(ValueError):
            open_package(parsed, segment, bad_key)


# -- parse -----------------------------------------------------------------------------------


def _parse_is_total(data: bytes | bytearray | memoryview) -> Package | None:
    """parse() returns a consistent Package or raises MalformedPackage, nothing else."""
    try:
        parsed = parse(data)
    except MalformedPackage:
        return None
    raw = bytes(data)
    assert isinstance(parsed, Package)
    assert raw[:4] == b"OTC2"
    assert parsed.kind in set(Kind)
    assert len(raw) == 49 + parsed.length
    assert parsed.offset + parsed.segment_length <= U64
    assert bytes(parsed.authenticated) == raw[: 33 + parsed.length]
    assert bytes(parsed.ciphertext) == raw[33 : 33 + parsed.length]
    assert parsed.tag == raw[-16:]
    return parsed


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    _parse_is_total(data)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.integers(0, 255),
    pad_id=st.binary(min_size=16, max_size=16),
    offset=st.integers(0, U64),
    length=st.integers(0, (1 << 32) - 1) | st.integers(0, 64),
    body=st.binary(max_size=128),
)
def test_parse_header_shaped_bytes(kind: int, pad_id: bytes, offset: int, length: int, body: bytes) -> None:
    data = header(kind, pad_id, offset, length) + body
    parsed = _parse_is_total(data)
    well_formed = 1 <= kind <= 4 and len(body) == length + 16 and offset + 16 + length <= U64
    assert (parsed is not None) == well_formed


_MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 200)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("kind"), st.sampled_from([0, 5, 6, 127, 128, 255]) | st.integers(0, 255)),
    st.tuples(st.just("magic"), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just("length"), st.integers(0, (1 << 32) - 1)),
    st.tuples(st.just("offset"), st.integers(0, U64)),
    st.tuples(st.just("byte"), st.tuples(st.integers(0, 200), st.integers(0, 255))),
)


@settings(max_examples=400, deadline=None)
@given(size=st.integers(0, 60), mutations=st.lists(_MUTATIONS, min_size=1, max_size=4))
def test_parse_mutated_packages(size: int, mutations: list[tuple[str, object]]) -> None:
    data = bytearray(make(det(b"mutate", size), label=b"mutate")[0])
    for what, arg in mutations:
        if what == "truncate":
            del data[min(arg, len(data)) :]
        elif what == "extend":
            data += arg
        elif what == "kind" and len(data) > 4:
            data[4] = arg
        elif what == "magic":
            data[:4] = arg
        elif what == "length" and len(data) >= 33:
            data[29:33] = struct.pack(">I", arg)
        elif what == "offset" and len(data) >= 29:
            data[21:29] = struct.pack(">Q", arg)
        elif what == "byte" and data:
            position, value = arg
            data[position % len(data)] = value
    for form in (bytes(data), data, memoryview(data)):
        _parse_is_total(form)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d[:-1], id="one-short"),
        pytest.param(lambda d: d[:48], id="below-overhead"),
        pytest.param(lambda d: b"", id="empty"),
        pytest.param(lambda d: d + b"\x00", id="one-long"),
        pytest.param(lambda d: d[:4] + b"\x00" + d[5:], id="kind-0"),
        pytest.param(lambda d: d[:4] + b"\x05" + d[5:], id="kind-5"),
        pytest.param(lambda d: d[:4] + b"\xff" + d[5:], id="kind-255"),
        pytest.param(lambda d: b"OTC3" + d[4:], id="magic-OTC3"),
        pytest.param(lambda d: b"otc2" + d[4:], id="magic-lowercase"),
        pytest.param(lambda d: d[:29] + struct.pack(">I", 6) + d[33:], id="length-plus-one"),
        pytest.param(lambda d: d[:29] + struct.pack(">I", 4) + d[33:], id="length-minus-one"),
        pytest.param(lambda d: d[:29] + b"\xff\xff\xff\xff" + d[33:], id="length-max"),
        pytest.param(lambda d: d[:21] + b"\xff" * 8 + d[29:], id="offset-max"),
        pytest.param(lambda d: d[:21] + struct.pack(">Q", U64 - 20) + d[29:], id="offset-one-too-far"),
    ],
)
def test_parse_refuses_malformed(mutate) -> None:
    data, _, _ = make(b"hello", label=b"malformed")
    with pytest.raises(MalformedPackage):
        parse(mutate(data))


def test_parse_accepts_the_largest_offset() -> None:
    data, _, segment = make(b"hello", offset=U64 - 21, label=b"largest")
    parsed = parse(data)
    assert parsed.segment == (U64 - 21, U64)
    assert open_package(parsed, segment, AUTH) == b"hello"


def test_parse_is_a_view_not_a_copy() -> None:
    data, _, _ = make(b"view", label=b"view")
    parsed = parse(data)
    assert isinstance(parsed.ciphertext, memoryview) and isinstance(parsed.authenticated, memoryview)
    assert parsed.ciphertext.obj is data


# -- base64 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "!!!!",
        "not base64 at all",
        "a",
        "ab",
        "abc",
        "aGVsbG8",  # missing padding
        "aGVsbG8==",  # too much padding
        "=aGVsbG8",
        "ab=c",
        "aGVs*bG8=",  # embedded junk
        "aGVs bG8=",
        "aGVs\nbG8=",
        "aGVs\tbG8=",
        "aGVsbG8=aGk=",  # data after padding
        "aGVsbG8=\x00",
        "aGVs-bG8=",  # urlsafe alphabet
        "aGVs_bG8=",
        "aGVsbG8=é",  # non-ASCII
        "ñ",
        "\u2603\u2603\u2603\u2603",
        b"aGVsbG8",
        b"aGVs*bG8=",
        b"\xff\xfe\xfd\xfc",
        b"aGVs\nbG8=",
    ],
)
def test_decode_refuses(text: str | bytes) -> None:
    with pytest.raises(MalformedPackage):
        decode(text)


@pytest.mark.parametrize(
    "text", ["aGVsbG8=", " aGVsbG8=", "aGVsbG8=\n", "\r\n\taGVsbG8= \r\n", b"aGVsbG8=\n", b" aGVsbG8="]
)
def test_decode_accepts_surrounding_whitespace(text: str | bytes) -> None:
    assert decode(text) == b"hello"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_encode_decode_round_trip(data: bytes) -> None:
    text = encode(data)
    assert text.isascii()
    assert text == base64.b64encode(data).decode("ascii")
    assert decode(text) == data
    assert decode(text.encode("ascii")) == data
    assert decode(f"  {text}\n") == data


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.binary(max_size=80))
def test_decode_is_total(text: str | bytes) -> None:
    try:
        out = decode(text)
    except MalformedPackage:
        return
    assert isinstance(out, bytes)


# -- seal and xor argument checks ------------------------------------------------------------------


def test_seal_refuses_wrong_segment_length() -> None:
    pad_id = det(b"seal pad_id", 16)
    for segment in (det(b"s", 20), det(b"s", 22), det(b"s", 37), b"", det(b"s", 5)):
        with pytest.raises(ValueError):
            seal(Kind.TEXT, pad_id, 0, segment, b"hello", AUTH)


@pytest.mark.parametrize("n", [0, 1, 15, 17, 32])
def test_seal_refuses_bad_auth_key(n: int) -> None:
    with pytest.raises(ValueError):
        seal(Kind.TEXT, det(b"pad_id", 16), 0, det(b"s", 21), b"hello", det(b"r", n))


@pytest.mark.parametrize("n", [0, 1, 15, 17, 32])
def test_seal_refuses_bad_pad_id(n: int) -> None:
    with pytest.raises(ValueError):
        seal(Kind.TEXT, det(b"pad_id", n), 0, det(b"s", 21), b"hello", AUTH)


@pytest.mark.parametrize("kind", [0, 5, 6, 255, -1, 256])
def test_seal_refuses_unknown_kind(kind: int) -> None:
    with pytest.raises(ValueError):
        seal(kind, det(b"pad_id", 16), 0, det(b"s", 21), b"hello", AUTH)


@pytest.mark.parametrize("offset", [-1, U64 - 20, U64, U64 + 1])
def test_seal_refuses_offset_out_of_range(offset: int) -> None:
    with pytest.raises(ValueError):
        seal(Kind.TEXT, det(b"pad_id", 16), offset, det(b"s", 21), b"hello", AUTH)


@pytest.mark.parametrize("a,b", [(b"a", b""), (b"", b"a"), (b"abc", b"ab"), (bytes(10), bytes(11))])
def test_xor_refuses_unequal_lengths(a: bytes, b: bytes) -> None:
    with pytest.raises(ValueError):
        xor(a, b)


def test_xor_of_empty_is_empty() -> None:
    assert xor(b"", b"") == b""
    assert xor(memoryview(b""), memoryview(b"")) == b""
    assert isinstance(xor(b"", b""), bytes)


@pytest.mark.parametrize("n", [1, 7, 64, 1000])
def test_xor_matches_bytewise(n: int) -> None:
    a, b = det(b"xor a", n), det(b"xor b", n)
    expected = bytes(x ^ y for x, y in zip(a, b))
    assert xor(a, b) == expected
    assert xor(memoryview(a), bytearray(b)) == expected
    assert xor(xor(a, b), b) == a


# -- v1 is withdrawn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", V1_VECTORS, ids=[v["name"] for v in V1_VECTORS])
def test_v1_packages_are_refused_with_their_own_error(vector: dict) -> None:
    data = bytes.fromhex(vector["package"])
    assert data[:4] == b"OTC1"
    with pytest.raises(WithdrawnFormat) as info:
        parse(data)
    assert isinstance(info.value, MalformedPackage)
    assert "OTC1" in str(info.value) and "pair again" in str(info.value)
    with pytest.raises(WithdrawnFormat):
        parse(decode(encode(data)))


def test_v2_poly1305_matches_the_independent_one() -> None:
    """The vectors' RFC 8439 arithmetic agrees with cryptography's Poly1305 on assorted keys and lengths."""
    spec = importlib.util.spec_from_file_location("make_package_v2", VECTORS_DIR / "make_package_v2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for n in (0, 1, 15, 16, 17, 33, 100, 257):
        key, message = det(f"key/{n}", 32), det(f"msg/{n}", n)
        mac = Poly1305(key)
        mac.update(message)
        assert module.poly1305(key, message) == mac.finalize()


def test_a_destroyed_r_never_authenticates() -> None:
    """With R all zeros (a wiped pad) the tag would be the mask alone: refused both ways."""
    segment = det(b"zero r", 16 + 5)
    with pytest.raises(ValueError):
        seal(Kind.TEXT, det(b"pad_id", 16), 16, segment, b"hello", bytes(16))
    data = seal(Kind.TEXT, det(b"pad_id", 16), 16, segment, b"hello", AUTH)
    header_and_body = data[:-16]
    mac = Poly1305(bytes(16) + segment[:16])
    mac.update(header_and_body)
    forged = header_and_body + mac.finalize()
    with pytest.raises(InvalidPackage):
        open_package(parse(forged), segment, bytes(16))
