"""Random sources, named by URL.

* ``serial:///dev/ttyACM0`` -- a TrueRNG-style USB device that streams while
  DTR is set (pyserial asserts DTR when it opens the port);
* ``onerng:///dev/ttyACM0`` -- a OneRNG, driven with its command protocol;
* ``file:///dev/hwrng`` -- a character device or file read as a stream (the
  Pi's built-in generator);
* ``os:`` -- the operating system's CSPRNG: the mixer's second input, never a
  hardware source.

Query parameters: ``h`` (claimed min-entropy in bits per byte, default 8) for
every hardware source; ``timeout`` (seconds without a byte before the source
counts as stalled, default 2) for serial and OneRNG; ``mode`` (the OneRNG
noise mode, default 0) for OneRNG. Opening a source touches hardware; parsing
a URL and importing this module do not. pyserial is imported only when a
serial source is opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol
from urllib.parse import quote, unquote

from hrng.errors import InvalidSourceURL, SourceDisconnected, SourceStalled, SourceUnavailable

SCHEMES = ("serial", "onerng", "file", "os")
HARDWARE_SCHEMES = ("serial", "onerng", "file")
DEFAULT_ENTROPY = 8.0
DEFAULT_TIMEOUT = 2.0
READ_CHUNK = 1 << 16
MAX_URL = 4096
PTY_MAJORS = range(136, 144)  # Linux's Unix98 pseudo-terminal slaves

# The OneRNG's firmware reads "cmd" and one more character: a hex digit sets the
# noise mode (bit 0: no whitening, bit 1: add the RF source, bit 2: no avalanche
# source); 'O' starts output, 'o' stops it, 'w' flushes its entropy pool.
ONERNG_MODES = (0, 1, 2, 3, 6, 7)  # 4 and 5 would switch every noise source off
ONERNG_STOP, ONERNG_START, ONERNG_FLUSH, ONERNG_IDLE = b"cmdo", b"cmdO", b"cmdw", b"cmd4"

_PARAMS = {"serial": ("h", "timeout"), "onerng": ("h", "timeout", "mode"), "file": ("h",), "os": ()}


@dataclass(frozen=True)
class SourceURL:
    """A parsed source URL; :meth:`url` gives its canonical text."""

    scheme: str
    path: str = ""
    h: float = DEFAULT_ENTROPY
    timeout: float = DEFAULT_TIMEOUT
    mode: int = 0
    given: tuple[str, ...] = field(default=(), compare=False)  # the parameters the text named

    @property
    def hardware(self) -> bool:
        return self.scheme in HARDWARE_SCHEMES

    def url(self) -> str:
        if self.scheme == "os":
            return "os:"
        params = []
        if self.h != DEFAULT_ENTROPY:
            params.append(f"h={_decimal(self.h)}")
        if self.scheme in ("serial", "onerng") and self.timeout != DEFAULT_TIMEOUT:
            params.append(f"timeout={_decimal(self.timeout)}")
        if self.scheme == "onerng" and self.mode:
            params.append(f"mode={self.mode}")
        query = "?" + "&".join(params) if params else ""
        return f"{self.scheme}://{quote(self.path, safe='/')}{query}"

    def __str__(self) -> str:
        return self.url()


def _decimal(x: float) -> str:
    """A float as a plain decimal that reads back as the same float (never an exponent)."""
    text = format(Decimal(repr(x)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_url(text: str) -> SourceURL:
    """Parse a source URL; raise :class:`InvalidSourceURL` with the reason if it is not one."""
    if not isinstance(text, str) or not text or len(text) > MAX_URL:
        raise InvalidSourceURL()
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise InvalidSourceURL("A source URL has no spaces or control characters.")
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise InvalidSourceURL()
    if "#" in rest:
        raise InvalidSourceURL("A source URL has no #fragment.")
    rest, qmark, query = rest.partition("?")
    if scheme == "os":
        if rest or qmark:
            raise InvalidSourceURL("The OS CSPRNG is named os: alone.")
        return SourceURL("os")
    if not rest.startswith("//"):
        raise InvalidSourceURL(f"Write {scheme}:///dev/... (three slashes, then an absolute path).")
    raw_path = rest[2:]
    if not raw_path.startswith("/"):
        raise InvalidSourceURL(f"Write {scheme}:///dev/... (three slashes, then an absolute path).")
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise InvalidSourceURL("The path of a source URL must be UTF-8.") from None
    if "\x00" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise InvalidSourceURL("The path of a source URL has no control characters.")
    if path == "/" or path.endswith("/"):
        raise InvalidSourceURL("The path of a source URL names a device or file, not a directory.")
    values: dict[str, str] = {}
    if qmark:
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            if not eq or not name or not value:
                raise InvalidSourceURL(f"Parameters are name=value pairs joined by '&' (got {item!r}).")
            if name not in _PARAMS[scheme]:
                allowed = ", ".join(_PARAMS[scheme])
                raise InvalidSourceURL(f"{scheme}: takes the parameters {allowed}, not {name!r}.")
            if name in values:
                raise InvalidSourceURL(f"The parameter {name!r} is given twice.")
            values[name] = value
    h = _number(values, "h", DEFAULT_ENTROPY, 8.0, "claimed min-entropy h (bits per byte)")
    timeout = _number(values, "timeout", DEFAULT_TIMEOUT, 3600.0, "timeout (seconds)")
    mode = 0
    if "mode" in values:
        if values["mode"] not in [str(m) for m in ONERNG_MODES]:
            raise InvalidSourceURL(f"The OneRNG mode is one of {', '.join(map(str, ONERNG_MODES))}.")
        mode = int(values["mode"])
    return SourceURL(scheme, path, h=h, timeout=timeout, mode=mode, given=tuple(values))


def _number(values: dict[str, str], name: str, default: float, high: float, what: str) -> float:
    """A parameter that is a plain decimal number above 0 and at most ``high``."""
    if name not in values:
        return default
    text = values[name]
    try:
        if not all(c in "0123456789." for c in text):
            raise ValueError
        value = float(text)
    except ValueError:
        raise InvalidSourceURL(f"The {what} must be a plain decimal number (got {text!r}).") from None
    if not 0.0 < value <= high:
        raise InvalidSourceURL(f"The {what} must be above 0 and at most {high:g} (got {text}).")
    return value


class Source(Protocol):
    """A stream of byte samples."""

    url: str
    claimed_entropy: float  # min-entropy per byte sample, in bits, that the health tests assume
    hardware: bool

    def read(self, n: int) -> bytes:
        """Between 1 and ``n`` bytes; raises on a stall or disconnect rather than return nothing."""
        ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def is_pseudo_terminal(path: str) -> bool:
    """True for a pseudo-terminal (an emulated HRNG such as `otc hrng emulate` makes)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_MAJORS


class SerialSource:
    """A TrueRNG-style USB serial HRNG: bytes stream while the port is open with DTR set."""

    hardware = True

    def __init__(self, spec: SourceURL) -> None:
        self.spec = spec
        self.url = spec.url()
        self.claimed_entropy = spec.h
        self._port = None
        try:
            import serial  # the optional hardware dependency, imported only here
        except ImportError:
            raise SourceUnavailable("Serial HRNGs need pyserial (pip install pyserial).") from None
        self._serial = serial
        try:
            # pyserial asserts DTR when it opens the port (a pseudo-terminal has no DTR
            # line, and pyserial ignores that at open). exclusive: one reader per device.
            self._port = serial.Serial(spec.path, timeout=spec.timeout, exclusive=True)
            self._port.reset_input_buffer()  # bytes queued before we opened are not ours
        except (serial.SerialException, OSError, ValueError) as exc:
            self.close()
            reason = getattr(exc, "strerror", None) or "cannot open it"
            raise SourceUnavailable(f"Cannot open the HRNG {self.url}: {reason}.") from None

    def read(self, n: int) -> bytes:
        if self._port is None:
            raise SourceDisconnected(f"The HRNG {self.url} is closed.")
        try:
            data = self._port.read(max(1, min(n, READ_CHUNK)))
        except (self._serial.SerialException, OSError):
            raise SourceDisconnected(
                f"The HRNG {self.url} was disconnected; generation stopped and nothing since its last "
                "checked window was used."
            ) from None
        if not data:
            raise SourceStalled(
                f"The HRNG {self.url} sent nothing for {self.spec.timeout:g} s; generation stopped and "
                "nothing since its last checked window was used."
            )
        return data

    def describe(self) -> str:
        kind = " (a pseudo-terminal: an emulated HRNG, not hardware)" if is_pseudo_terminal(self.spec.path) else ""
        return f"{self.url}{kind}"

    def _write(self, command: bytes) -> None:
        assert self._port is not None
        self._port.write(command)
        self._port.flush()

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (self._serial.SerialException, OSError):
                pass  # a disconnected device cannot be closed cleanly; it is gone either way


class OneRNGSource(SerialSource):
    """A OneRNG: its output is switched on and off with commands over the serial line."""

    def __init__(self, spec: SourceURL) -> None:
        super().__init__(spec)
        try:
            # Stop any earlier output, choose the noise mode, flush the pool of bytes
            # gathered in an earlier mode, then start.
            self._write(ONERNG_STOP + b"cmd%x" % spec.mode + ONERNG_FLUSH + ONERNG_START)
        except (self._serial.SerialException, OSError):
            self.close()
            raise SourceUnavailable(f"Cannot start the OneRNG {self.url}.") from None

    def close(self) -> None:
        if self._port is not None:
            try:
                # As the vendor's script does: stop output, stop gathering noise, and
                # flush the pool so no leftover bytes wait for the next reader.
                self._write(ONERNG_STOP + ONERNG_IDLE + ONERNG_FLUSH)
            except (self._serial.SerialException, OSError):
                pass
        super().close()


class FileSource:
    """A character device (``/dev/hwrng``) or a file, read as a stream; its end is a disconnect."""

    hardware = True

    def __init__(self, spec: SourceURL) -> None:
        self.spec = spec
        self.url = spec.url()
        self.claimed_entropy = spec.h
        try:
            self._file = open(spec.path, "rb", buffering=0)
        except OSError as exc:
            raise SourceUnavailable(f"Cannot open the HRNG {self.url}: {exc.strerror or 'cannot open it'}.") from None

    def read(self, n: int) -> bytes:
        try:
            data = self._file.read(max(1, min(n, READ_CHUNK)))
        except (OSError, ValueError):
            raise SourceDisconnected(f"The HRNG {self.url} failed to read; generation stopped.") from None
        if not data:
            raise SourceDisconnected(f"The HRNG {self.url} ended; generation stopped.")
        return data

    def describe(self) -> str:
        return self.url

    def close(self) -> None:
        self._file.close()


class OSSource:
    """The operating system's CSPRNG: never a hardware source."""

    hardware = False
    claimed_entropy = DEFAULT_ENTROPY
    url = "os:"

    def __init__(self, spec: SourceURL | None = None, urandom: Callable[[int], bytes] = os.urandom) -> None:
        self._urandom = urandom

    def read(self, n: int) -> bytes:
        return self._urandom(max(1, n))

    def describe(self) -> str:
        return "os: (the operating system's CSPRNG)"

    def close(self) -> None:
        pass


class BytesSource:
    """A fake hardware source over given bytes, for tests and benchmarks; never reachable from a URL."""

    hardware = True

    def __init__(self, data: bytes, *, h: float = DEFAULT_ENTROPY, url: str = "fake:bytes", chunk: int = READ_CHUNK,
                 repeat: bool = False) -> None:
        self.url = url
        self.claimed_entropy = h
        self._data = memoryview(bytes(data))
        self._pos = 0
        self._chunk = chunk
        self._repeat = repeat

    def read(self, n: int) -> bytes:
        if self._repeat and self._pos >= len(self._data):
            self._pos = 0
        out = bytes(self._data[self._pos : self._pos + max(1, min(n, self._chunk))])
        if not out:
            raise SourceDisconnected(f"The HRNG {self.url} ended; generation stopped.")
        self._pos += len(out)
        return out

    def describe(self) -> str:
        return f"{self.url} (a fake source for tests)"

    def close(self) -> None:
        pass


_OPENERS: dict[str, Callable[[SourceURL], Source]] = {
    "serial": SerialSource,
    "onerng": OneRNGSource,
    "file": FileSource,
    "os": OSSource,
}


def open_source(url: str | SourceURL) -> Source:
    """Open the source a URL names (this touches the hardware)."""
    spec = url if isinstance(url, SourceURL) else parse_url(url)
    return _OPENERS[spec.scheme](spec)
