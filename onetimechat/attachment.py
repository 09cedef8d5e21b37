"""Attachments: a file's header and its parts (docs/attachments.md; DESIGN.md, "Attachments").

Pure functions over bytes, as :mod:`onetimechat.package` is: nothing here does I/O.

A file travels as a **header** under the pad (a kind 2 package whose plaintext is
:func:`header_body`: name, size, SHA-256, the part size and, for a streamed file,
the file's 32-byte key and a 7-byte nonce prefix), then as its **parts**, in order:

* streamed (the default): each part is sealed by the sending device with
  ChaCha20-Poly1305 under ``derive_key(file_key, STREAM_PURPOSE)`` in the STREAM
  construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015): the nonce is
  ``prefix (7) | index (4) | last (1)``, so a part moved to another place, a part
  given twice, a part from another file, or a file cut short (no part with the
  last flag at the index the header's size implies) fails or never completes.
  On the wire a part is ``"OTCF" | version | file_id (16) | index (4) | last (1) |
  ciphertext | tag (16)``; its first 26 bytes are the AEAD's associated data.
* ``--otp``: each part is itself a kind 2 package under the pad, its plaintext
  ``OTP_PART | file_id (16) | index (4) | data``: L + 16 pad bytes per part,
  information-theoretic like a text.

Every part but the last holds exactly ``part_size`` bytes of the file; the last
holds the rest (an empty file is one empty last part).
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from onetimechat.crypto import derive_key
from onetimechat.errors import (
    FileNameRefused,
    FilePartInvalid,
    FileSizeMismatch,
    MalformedPackage,
)

# The first byte of a kind 2 package's plaintext.
HEADER_TYPE = 1
OTP_PART = 2
HEADER_VERSION = 1

STREAM = 1  # parts under the file's key (ChaCha20-Poly1305, STREAM)
OTP = 2  # parts under the pad (--otp)
MODES = {STREAM: "stream", OTP: "otp"}

# A relay message is at most 2 MiB of base64: a 1 MiB part (with its framing) is 1.4 MB of it.
PART_SIZE = 1 << 20
MAX_PART_SIZE = 1 << 20
MAX_FILE_SIZE = 1 << 40
MAX_NAME_BYTES = 255
KEY_LEN = 32
PREFIX_LEN = 7
FILE_ID_LEN = 16
SHA256_LEN = 32
TAG_LEN = 16
STREAM_PURPOSE = "otc file v1 stream"

# type, version, mode, file_id, size, part_size, sha256, key, nonce prefix, name length; then the name (UTF-8).
_HEADER = struct.Struct(">BBB16sQI32s32s7sH")
PART_MAGIC = b"OTCF"
PART_VERSION = 1
_PART = struct.Struct(">4sB16sIB")  # magic, version, file_id, index, last
PART_HEADER_LEN = _PART.size  # 26
PART_OVERHEAD = PART_HEADER_LEN + TAG_LEN
_OTP_PART = struct.Struct(">B16sI")  # type, file_id, index
OTP_PART_HEADER_LEN = _OTP_PART.size  # 21
# Characters a file name may not hold besides the path separators: every control character (Cc), and the
# format characters that reorder or hide text (bidirectional controls, zero-width joiners) (Cf).
_REFUSED_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def check_name(name: str) -> str:
    """``name`` if it is a plain file name; :class:`FileNameRefused` otherwise (a path separator, a control or
    format character, ``.`` or ``..``, empty, or over 255 bytes of UTF-8)."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise FileNameRefused()
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise FileNameRefused() from None
    if len(encoded) > MAX_NAME_BYTES or "/" in name or "\\" in name:
        raise FileNameRefused()
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in name):
        raise FileNameRefused()
    return name


def part_count(size: int, part_size: int) -> int:
    """How many parts a file of ``size`` bytes has (an empty file has one, empty)."""
    return max(1, -(-size // part_size))


@dataclass(frozen=True)
class FileHeader:
    """What a file's header says. ``key`` and ``prefix`` are all zeros for an --otp file."""

    file_id: bytes
    mode: int
    size: int
    part_size: int
    sha256: bytes
    key: bytes
    prefix: bytes
    name: str

    @property
    def parts(self) -> int:
        return part_count(self.size, self.part_size)

    def part_length(self, index: int) -> int:
        """Bytes of the file in part ``index``; FileSizeMismatch past the last part."""
        if not 0 <= index < self.parts:
            raise FileSizeMismatch()
        return self.part_size if index < self.parts - 1 else self.size - self.part_size * (self.parts - 1)

    def is_last(self, index: int) -> bool:
        return index == self.parts - 1

    def public(self) -> dict:
        """What the laptops may know of it: everything but the key and the nonce prefix."""
        return {"id": self.file_id.hex(), "name": self.name, "size": self.size, "sha256": self.sha256.hex(),
                "parts": self.parts, "part_size": self.part_size, "mode": MODES[self.mode]}


def new_header(name: str, size: int, sha256: bytes, mode: int, random: bytes) -> FileHeader:
    """A header for a new file; ``random`` is 16 + 32 + 7 bytes from the device's mixer (id, key, prefix)."""
    if mode not in MODES:
        raise ValueError("unknown file mode")
    if len(random) != FILE_ID_LEN + KEY_LEN + PREFIX_LEN:
        raise ValueError("a file header needs 55 random bytes")
    if not 0 <= size <= MAX_FILE_SIZE:
        raise FileSizeMismatch("File refused: its size is out of range (at most 1 TiB).")
    if len(sha256) != SHA256_LEN:
        raise ValueError("a SHA-256 is 32 bytes")
    file_id, key, prefix = random[:16], random[16:48], random[48:]
    if mode == OTP:
        key, prefix = bytes(KEY_LEN), bytes(PREFIX_LEN)
    return FileHeader(file_id, mode, size, PART_SIZE, sha256, key, prefix, check_name(name))


def header_body(header: FileHeader) -> bytes:
    """The plaintext of a file's header package."""
    name = check_name(header.name).encode("utf-8")
    return _HEADER.pack(HEADER_TYPE, HEADER_VERSION, header.mode, header.file_id, header.size, header.part_size,
                        header.sha256, header.key, header.prefix, len(name)) + name


def body_type(body: bytes) -> int:
    """What a kind 2 package's plaintext is: :data:`HEADER_TYPE` or :data:`OTP_PART`; MalformedPackage else."""
    if not body or body[0] not in (HEADER_TYPE, OTP_PART):
        raise MalformedPackage("File package refused: it is neither a file's header nor one of its parts.")
    return body[0]


def parse_header(body: bytes) -> FileHeader:
    """A header package's plaintext, checked: MalformedPackage for its form, FileNameRefused for its name."""
    if len(body) < _HEADER.size:
        raise MalformedPackage("File header refused: it is truncated.")
    kind, version, mode, file_id, size, part_size, sha256, key, prefix, name_len = _HEADER.unpack_from(body)
    if kind != HEADER_TYPE or version != HEADER_VERSION or mode not in MODES:
        raise MalformedPackage("File header refused: unknown header version or mode.")
    if len(body) != _HEADER.size + name_len:
        raise MalformedPackage("File header refused: its name's length does not match its size.")
    if not 0 < part_size <= MAX_PART_SIZE or size > MAX_FILE_SIZE:
        raise FileSizeMismatch("File header refused: its size or part size is out of range.")
    try:
        name = body[_HEADER.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise FileNameRefused() from None
    return FileHeader(bytes(file_id), mode, size, part_size, bytes(sha256), bytes(key), bytes(prefix),
                      check_name(name))


# -- streamed parts (ChaCha20-Poly1305, STREAM) ------------------------------------------------------------


def stream_key(header: FileHeader) -> ChaCha20Poly1305:
    """The AEAD of a streamed file's parts (the header's key through the one HKDF helper)."""
    if header.mode != STREAM:
        raise ValueError("an --otp file has no key")
    return ChaCha20Poly1305(derive_key(header.key, STREAM_PURPOSE))


def _nonce(header: FileHeader, index: int, last: bool) -> bytes:
    return header.prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def seal_part(header: FileHeader, aead: ChaCha20Poly1305, index: int, data: bytes | memoryview) -> bytes:
    """Part ``index`` of a streamed file: FileSizeMismatch if ``data`` is not that part's length."""
    if len(data) != header.part_length(index):
        raise FileSizeMismatch()
    last = header.is_last(index)
    head = _PART.pack(PART_MAGIC, PART_VERSION, header.file_id, index, 1 if last else 0)
    return head + aead.encrypt(_nonce(header, index, last), bytes(data), head)


def part_address(blob: bytes | memoryview) -> tuple[bytes, int, bool]:
    """(file_id, index, last) a streamed part names in the clear; MalformedPackage if it is not one."""
    if len(blob) < PART_OVERHEAD:
        raise MalformedPackage("File part refused: it is truncated.")
    magic, version, file_id, index, last = _PART.unpack_from(blob)
    if magic != PART_MAGIC or version != PART_VERSION or last not in (0, 1):
        raise MalformedPackage("File part refused: it is not a One Time Chat file part.")
    return bytes(file_id), index, bool(last)


def is_stream_part(blob: bytes | memoryview) -> bool:
    return bytes(blob[:4]) == PART_MAGIC


def open_part(header: FileHeader, aead: ChaCha20Poly1305, blob: bytes | memoryview) -> tuple[int, bytes]:
    """(index, data) of a streamed part of ``header``'s file, authenticated. FilePartInvalid if it fails (one
    error, whatever was altered); FileSizeMismatch if a genuine part disagrees with the header's size."""
    file_id, index, last = part_address(blob)
    if file_id != header.file_id:
        raise FilePartInvalid()
    view = memoryview(blob)
    try:
        data = aead.decrypt(_nonce(header, index, last), view[PART_HEADER_LEN:], view[:PART_HEADER_LEN])
    except InvalidTag:
        raise FilePartInvalid() from None
    # Authentic, so its sender's device made it: a length or a last flag the header's size does not allow is
    # that device's lie, refused all the same.
    if index >= header.parts or last != header.is_last(index) or len(data) != header.part_length(index):
        raise FileSizeMismatch()
    return index, data


# -- parts under the pad (--otp) ---------------------------------------------------------------------------


def otp_part_body(header: FileHeader, index: int, data: bytes | memoryview) -> bytes:
    """The plaintext of part ``index`` of an --otp file (a kind 2 package)."""
    if len(data) != header.part_length(index):
        raise FileSizeMismatch()
    return _OTP_PART.pack(OTP_PART, header.file_id, index) + bytes(data)


def parse_otp_part(body: bytes) -> tuple[bytes, int, bytes]:
    """(file_id, index, data) of an --otp part's plaintext."""
    if len(body) < _OTP_PART.size:
        raise MalformedPackage("File part refused: it is truncated.")
    kind, file_id, index = _OTP_PART.unpack_from(body)
    if kind != OTP_PART:
        raise MalformedPackage("File part refused: it is not a file's part.")
    return bytes(file_id), index, body[_OTP_PART.size :]


def otp_package_length(header: FileHeader, index: int) -> int:
    """L, the ciphertext length of part ``index``'s package: the part's bytes and 21 bytes of framing."""
    return OTP_PART_HEADER_LEN + header.part_length(index)


def digest(data: bytes | memoryview) -> bytes:
    """The SHA-256 of one part (what a device records of each part it seals)."""
    return hashlib.sha256(data).digest()
