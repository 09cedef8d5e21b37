"""BLS12-381 through py-arkworks-bls12381: scalars, checked decoding, hashing, and GT.

What the library gives and what we add (docs/abe.md):

* G1 and G2 points decode with ``from_compressed_bytes``, which checks that a
  point is on the curve and in the prime-order subgroup; we also refuse the
  identity.
* ``hash_to_curve`` is RFC 9380's ``BLS12381G1_XMD:SHA-256_SSWU_RO_``; we call
  it with our own domain separation tag (tests check an RFC vector).
* GT (the order-r subgroup of Fp12*) multiplies with ``*``; ``+`` is Fp12
  addition, not the group law. The library has no GT exponentiation and no
  GT decoding. Its ``str`` is the hex of arkworks' canonical serialisation
  (12 base-field coordinates, 48 bytes little-endian each, 576 bytes): that is
  our canonical GT encoding, which the KEM hashes.
* :func:`gt_pow` and :class:`FixedBase` exponentiate with the library's
  multiplication in a fixed sequence of operations (windows of 4 bits, every
  window multiplies, even by one), so the sequence does not depend on the
  secret exponent.
* :func:`gt_decode` rebuilds a GT element from its 576 bytes with the library's
  own field operations: 1, g, ..., g^11 (g the GT generator, whose minimal
  polynomial over Fp has degree 12) are a basis of Fp12 over Fp; the
  coordinates of the element in that basis are a linear map of its serialised
  coordinates (a 12x12 matrix over Fp, inverted once), and the element is the
  sum of basis elements times coordinates (double-and-add with Fp12 ``+``).
  It then re-encodes to the same bytes and passes x^r = 1 (the subgroup check).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

from device.abe.errors import MalformedAbeData
from device.abe.policy import ORDER

#: The base field modulus p of BLS12-381.
FIELD = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB
G1_BYTES, G2_BYTES, GT_BYTES, SCALAR_BYTES = 48, 96, 576, 32
FP_BYTES = 48
#: Our domain separation tag for hashing attributes to G1 (RFC 9380 section 3.1).
ATTRIBUTE_DST = b"OTC-ABE-V01-CS01-with-BLS12381G1_XMD:SHA-256_SSWU_RO_"
WINDOW = 4

RandomBytes = Callable[[int], bytes]

G1_GENERATOR = G1Point()
G2_GENERATOR = G2Point()


def random_scalar(random_bytes: RandomBytes = os.urandom) -> int:
    """A uniform non-zero scalar (64 random bytes reduced mod r: bias below 2^-250)."""
    while True:
        value = int.from_bytes(random_bytes(64), "big") % ORDER
        if value:
            return value


def scalar(value: int) -> Scalar:
    return Scalar(value % ORDER)


@lru_cache(maxsize=4096)
def hash_attribute(attribute: str) -> G1Point:
    """H(attribute) in G1: RFC 9380 hash-to-curve of the upper-case name under our DST."""
    return G1Point.hash_to_curve(attribute.encode("ascii"), ATTRIBUTE_DST)


def _decode_point(cls: Any, size: int, data: bytes) -> Any:
    if len(data) != size:
        raise MalformedAbeData()
    try:
        point = cls.from_compressed_bytes(data)  # checks the curve and the subgroup
    except (ValueError, TypeError, OverflowError):
        raise MalformedAbeData() from None
    if point == cls.identity() or not point.is_in_subgroup():
        raise MalformedAbeData()
    return point


def g1_decode(data: bytes) -> G1Point:
    """A G1 point from outside: on the curve, in the subgroup, not the identity."""
    return _decode_point(G1Point, G1_BYTES, data)


def g2_decode(data: bytes) -> G2Point:
    """A G2 point from outside: on the curve, in the subgroup, not the identity."""
    return _decode_point(G2Point, G2_BYTES, data)


# -- GT ------------------------------------------------------------------------------------


def gt_encode(element: GT) -> bytes:
    """The canonical 576-byte encoding (arkworks' serialisation of the Fp12 element)."""
    data = bytes.fromhex(str(element))
    if len(data) != GT_BYTES:
        raise AssertionError("unexpected GT encoding from the pairing library")
    return data


def gt_pow(base: GT, exponent: int) -> GT:
    """base^exponent (0 <= exponent < 2^256), fixed-window, one multiplication per window."""
    table = [GT.one(), base]
    for _ in range(2, 1 << WINDOW):
        table.append(table[-1] * base)
    result = GT.one()
    mask = (1 << WINDOW) - 1
    for shift in range(256 - WINDOW, -1, -WINDOW):
        for _ in range(WINDOW):
            result = result * result
        result = result * table[(exponent >> shift) & mask]
    return result


class FixedBase:
    """Powers of one fixed GT element from a precomputed table: 64 multiplications each.

    ``table[j][d] = base^(d * 16^j)``; 64 x 16 elements, built once (about 960
    multiplications) for the public e(g,g)^alpha of an authority.
    """

    def __init__(self, base: GT) -> None:
        self.table: list[list[GT]] = []
        step = base
        for _ in range(256 // WINDOW):
            row = [GT.one(), step]
            for _ in range(2, 1 << WINDOW):
                row.append(row[-1] * step)
            self.table.append(row)
            step = row[-1] * step
        self.base = base

    def pow(self, exponent: int) -> GT:
        result = GT.one()
        mask = (1 << WINDOW) - 1
        for j, row in enumerate(self.table):
            result = result * row[(exponent >> (WINDOW * j)) & mask]
        return result


def _coordinates(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + FP_BYTES], "little") for i in range(0, GT_BYTES, FP_BYTES)]


@lru_cache(maxsize=1)
def _gt_basis() -> tuple[list[GT], list[list[int]]]:
    """The basis 1, g, ..., g^11 and the inverse of its coordinate matrix over Fp."""
    g = GT()
    basis = [GT.one()]
    for _ in range(11):
        basis.append(basis[-1] * g)
    n = len(basis)
    # Gauss-Jordan over Fp on [M | I]; M's rows are the basis elements' coordinates.
    rows = [_coordinates(gt_encode(b)) + [int(i == j) for j in range(n)] for i, b in enumerate(basis)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] % FIELD)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        inv = pow(rows[col][col], -1, FIELD)
        rows[col] = [v * inv % FIELD for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col]:
                f = rows[r][col]
                rows[r] = [(v - f * w) % FIELD for v, w in zip(rows[r], rows[col])]
    inverse = [row[n:] for row in rows]
    return basis, inverse


def _times(c: int, element: GT) -> GT:
    """c * element in Fp12 (c an Fp scalar), by double-and-add with Fp12 addition."""
    result = GT.zero()
    for bit in bin(c)[2:]:
        result = result + result
        if bit == "1":
            result = result + element
    return result


def gt_decode(data: bytes) -> GT:
    """A GT element from its canonical encoding: canonical, and in the order-r subgroup."""
    if len(data) != GT_BYTES:
        raise MalformedAbeData()
    coords = _coordinates(data)
    if any(c >= FIELD for c in coords):
        raise MalformedAbeData()
    basis, inverse = _gt_basis()
    # x = sum_j X_j e_j and e_j = sum_i A[j][i] g^i, so x's coordinate on g^i is sum_j X_j A[j][i].
    element = GT.zero()
    for i, b in enumerate(basis):
        c = sum(x * inverse[j][i] for j, x in enumerate(coords)) % FIELD
        if c:
            element = element + _times(c, b)
    if gt_encode(element) != data or element == GT.one() or gt_pow(element, ORDER) != GT.one():
        raise MalformedAbeData()
    return element
