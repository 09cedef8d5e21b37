"""An emulated serial HRNG on a pseudo-terminal, for tests and demos (`otc hrng emulate`).

The emulator opens a pseudo-terminal and writes random bytes to it at a set
rate while a reader holds the device open, as a TrueRNG streams while DTR is
set. A pseudo-terminal has no DTR line (setting it fails with ENOTTY, which
pyserial ignores when it opens a port), so the emulator watches for the other
side being open instead: on Linux, opening a serial port raises DTR and
closing it drops DTR, so the two coincide for a reader that opens the port
to read it. With ``protocol="onerng"`` it also speaks the OneRNG's command
protocol: nothing flows until ``cmdO``, ``cmdo`` stops it, ``cmdw`` flushes
what is queued, and modes 4 and 5 switch the noise off.

Fault modes, from byte ``fault_after`` of the stream on:

* ``stuck`` -- the last good byte, repeated forever (a stuck converter);
* ``bias`` -- only the low four bits vary (4 bits of min-entropy per byte
  where 8 are claimed), which the Adaptive Proportion Test catches;
* ``dropout`` -- the device goes silent for ``dropout`` seconds (for good
  without one), then streams again;
* ``disconnect`` -- the device vanishes: the pseudo-terminal is closed.

With a ``seed`` the bytes are SHAKE-256 output, so a test can pin them;
without one they come from ``os.urandom``. Either way this is a fake: its
bytes are no better than the OS CSPRNG.
"""

from __future__ import annotations

import errno
import hashlib
import os
import select
import threading
import time
import tty

FAULTS = ("none", "stuck", "bias", "dropout", "disconnect")
PROTOCOLS = ("serial", "onerng")
DEFAULT_RATE = 1_000_000
DEFAULT_FAULT_AFTER = 1 << 16
FIFO = 1 << 14  # bytes the device holds while nobody reads (a real device's buffer)
MAX_RATE = 100_000_000
_NO_NOISE_MODES = (4, 5)  # OneRNG modes with every noise source off
_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))


class Noise:
    """The emulator's good bytes: SHAKE-256 of a seed in counter mode, or os.urandom."""

    BLOCK = 1 << 16

    def __init__(self, seed: bytes | None = None) -> None:
        self.seed = seed
        self._counter = 0
        self._buf = b""

    def read(self, n: int) -> bytes:
        if self.seed is None:
            return os.urandom(n)
        while len(self._buf) < n:
            block = hashlib.shake_256(self.seed + self._counter.to_bytes(8, "big")).digest(self.BLOCK)
            self._buf += block
            self._counter += 1
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


class FaultyStream:
    """The bytes the emulated device produces: good, then per the fault mode from ``fault_after`` on."""

    def __init__(self, fault: str = "none", fault_after: int = DEFAULT_FAULT_AFTER, seed: bytes | None = None) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        if fault_after < 0:
            raise ValueError("fault_after must be >= 0")
        self.fault = fault
        self.fault_after = fault_after
        self.noise = Noise(seed)
        self.position = 0  # bytes produced so far
        self._last = self.noise.read(1)[0] if fault_after == 0 else 0

    def limit(self, n: int) -> int:
        """How many of the next ``n`` bytes exist before the stream must pause (dropout, disconnect)."""
        if self.fault in ("dropout", "disconnect") and self.position <= self.fault_after:
            return min(n, self.fault_after - self.position)
        return n

    def read(self, n: int) -> bytes:
        good = max(0, min(n, self.fault_after - self.position)) if self.fault in ("stuck", "bias") else n
        out = self.noise.read(good)
        if good:
            self._last = out[-1]
        bad = n - good
        if bad and self.fault == "stuck":
            out += bytes([self._last]) * bad
        elif bad and self.fault == "bias":
            out += self.noise.read(bad).translate(_LOW_NIBBLE)
        self.position += n
        return out

    def resume(self) -> None:
        """After a dropout: stream good bytes again."""
        self.fault = "none"


class Emulator:
    """A serial HRNG on a pseudo-terminal: :meth:`start` it, give :attr:`url` to a reader, :meth:`stop` it."""

    def __init__(
        self,
        *,
        rate: int = DEFAULT_RATE,
        fault: str = "none",
        fault_after: int = DEFAULT_FAULT_AFTER,
        protocol: str = "serial",
        seed: bytes | None = None,
        dropout: float | None = None,
        fifo: int = FIFO,
    ) -> None:
        if not 1 <= rate <= MAX_RATE:
            raise ValueError(f"rate must be between 1 and {MAX_RATE} bytes/s")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}")
        if dropout is not None and dropout <= 0:
            raise ValueError("dropout must be positive")
        self.rate = rate
        self.protocol = protocol
        self.stream = FaultyStream(fault, fault_after, seed)
        self.fault = fault
        self.dropout = dropout
        self.fifo = max(fifo, 1)
        self.commands: list[str] = []  # OneRNG commands received, in order
        self.mode = 0
        self.running = protocol == "serial"  # a OneRNG waits for cmdO
        self.sent = 0  # bytes written to the pseudo-terminal
        self.reader_present = False
        self.disconnected = threading.Event()
        self.path = ""
        self._master = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = b""
        self._cmd_state = b""
        self._dropout_until: float | None = None

    @property
    def url(self) -> str:
        return f"{'onerng' if self.protocol == 'onerng' else 'serial'}://{self.path}"

    def start(self) -> Emulator:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # binary bytes, no echo, even before the reader sets the line up
            self.path = os.ttyname(slave)
        finally:
            os.close(slave)  # from now on the other side is open only while a reader has it
        os.set_blocking(master, False)
        self._master = master
        self._thread = threading.Thread(target=self._run, name="hrng-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close_master()

    def __enter__(self) -> Emulator:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the device loop ------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        tokens, last = 0.0, time.monotonic()
        step = max(1, min(4096, self.rate // 500))  # write every 2 ms or so
        while not self._stop.is_set() and self._master >= 0:
            streaming = self._streaming()
            ready = streaming and tokens >= step
            # Wake for commands; for room in the pseudo-terminal when bytes are due; else when they will be.
            poller.register(self._master, select.POLLIN | (select.POLLOUT if ready else 0))
            wait = min(20.0, (step - tokens) / self.rate * 1000.0) if streaming and not ready else 20.0
            events = poller.poll(max(wait, 0.2))
            mask = events[0][1] if events else 0
            if mask & select.POLLIN:
                self._read_commands()
            now = time.monotonic()
            if mask & select.POLLHUP:
                # Nobody holds the device open (DTR low): produce nothing, hold nothing back.
                self.reader_present = False
                tokens, last = 0.0, now
                self._stop.wait(0.005)
                continue
            self.reader_present = True
            if not streaming:
                tokens, last = 0.0, now
                continue
            tokens = min(float(self.fifo), tokens + (now - last) * self.rate)
            last = now
            if tokens >= step or (self._pending and tokens >= len(self._pending)):
                tokens -= self._write(int(tokens))
            if self.fault == "disconnect" and self.sent >= self.stream.fault_after:
                self._close_master()
                self.disconnected.set()
                return

    def _streaming(self) -> bool:
        if not self.running or (self.protocol == "onerng" and self.mode in _NO_NOISE_MODES):
            return False
        if self.fault == "dropout" and self.sent >= self.stream.fault_after and self.stream.fault == "dropout":
            now = time.monotonic()
            if self._dropout_until is None:
                self._dropout_until = now + self.dropout if self.dropout is not None else float("inf")
            if now < self._dropout_until:
                return False
            self.stream.resume()
        return True

    def _write(self, budget: int) -> int:
        """Write up to ``budget`` bytes; return how many were written."""
        written = 0
        while written < budget:
            if not self._pending:
                self._pending = self.stream.read(self.stream.limit(budget - written))
                if not self._pending:
                    break
            try:
                n = os.write(self._master, self._pending[: budget - written])
            except BlockingIOError:
                break  # the reader is behind: the device's FIFO holds the bytes
            except OSError as exc:
                if exc.errno == errno.EIO:
                    break  # the reader closed the device just now
                raise
            self._pending = self._pending[n:]
            self.sent += n
            written += n
            if self._pending:
                break  # the pseudo-terminal is full for now
        return written

    def _read_commands(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        if self.protocol != "onerng":
            return  # a TrueRNG ignores what it is sent
        for byte in data:
            self._command_byte(byte)

    def _command_byte(self, byte: int) -> None:
        """The OneRNG firmware's parser: 'c', 'm', 'd', then one command character."""
        state = self._cmd_state
        if len(state) < 3:
            self._cmd_state = state + bytes([byte]) if byte == b"cmd"[len(state)] else b""
            return
        self._cmd_state = b""
        char = chr(byte)
        if char in "0123456789abcdefABCDEF":
            self.mode = int(char, 16)
        elif char == "O":
            self.running = True
        elif char == "o":
            self.running = False
        elif char == "w":
            self._pending = b""  # flush: queued bytes are dropped
        elif char not in "vX":
            return  # not a command; the firmware ignores it
        self.commands.append("cmd" + char)

    def _close_master(self) -> None:
        master, self._master = self._master, -1
        if master >= 0:
            os.close(master)
