"""The writer process of `otc relay serve --workers N`: one process runs every worker's writes.

A worker sends each write as data (an operation's name and its arguments, relay/storage/sql.py ``OPS``) to the
writer over a socket pair the supervisor made (relay/workers.py: one pair per worker, handed to both ends over
their control lines; no path anyone else could connect to). The writer's one thread batches what has arrived:
the store's group commit (a savepoint per operation, one commit and one sync per batch), then answers each
operation with its result or its RelayError, only once the batch is durable. It never competes with request
threads for its interpreter lock between statements, and on SQLite it is the one writer, so it waits for no
other process's turn (docs/relay-protocol.md, "The writer process").

If the writer dies, each worker fails the writes it was waiting for, and those it is asked for until the new
writer is linked, with 503 ``unavailable``: the client retries (a send under its idempotency key, an
acknowledgement again), and nothing answered was lost, since nothing is answered before its batch's sync.

Frames on a line: a 4-byte big-endian length, then a pickle: from a worker ``(id, name, args, key)``, from the
writer a list of ``(id, error, value)``. Only the two ends' processes hold a line, and the unpickler loads only
the relay's own result and error classes all the same.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import pickle
import selectors
import signal
import socket
import struct
import threading
from typing import Any

from relay import errors
from relay.errors import NotDurable, RelayError, Unavailable
from relay.storage.sql import MAX_BATCH, OPS, Op, SQLStore

log = logging.getLogger("otc.relay")

_LENGTH = struct.Struct(">I")
# Longest frame either end accepts (a send's contents are at most the relay's largest request).
MAX_FRAME = 64 << 20
# How long a write waits for a link to the writer (a worker starting, or the writer restarting) before it is
# answered 503 `unavailable`; a worker's first write (its store's origin key) waits for START_WAIT_S.
LINK_WAIT_S = 1.0
START_WAIT_S = 60.0
# The classes a frame may hold besides builtin values: results and refusals.
_ALLOWED = {"relay.storage": {"Sent", "Presence", "Limits"}}


class _Loader(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        found = getattr(errors, name, None) if module == "relay.errors" else None
        if isinstance(found, type) and issubclass(found, RelayError):
            return found
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed on a writer's line")


def _load(data: bytes) -> Any:
    return _Loader(io.BytesIO(data)).load()


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class _Frames:
    """Frames read from one end of a line, as bytes arrive."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if length > MAX_FRAME:
                raise ValueError("frame too long")
            if len(self.buffer) < _LENGTH.size + length:
                break
            frames.append(bytes(self.buffer[_LENGTH.size:_LENGTH.size + length]))
            del self.buffer[:_LENGTH.size + length]
        return frames


def link(writer_control: socket.socket, worker_control: socket.socket, worker: int) -> None:
    """A new line between a worker and the writer: a socket pair whose ends go to each over its control line (the
    supervisor's; raises OSError if either is gone)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        socket.send_fds(writer_control, [str(worker).encode()], [ours.fileno()])
        socket.send_fds(worker_control, [b"w"], [theirs.fileno()])
    finally:
        ours.close()
        theirs.close()


# -- the writer ------------------------------------------------------------------------------------------


class _Line:
    """The writer's end of one worker's line."""

    def __init__(self, sock: socket.socket, worker: str) -> None:
        self.sock = sock
        self.worker = worker
        self.frames = _Frames()


def serve_writer(store: SQLStore, control: socket.socket, stop: socket.socket) -> None:
    """Run every write the workers send until ``stop`` is readable. New lines to workers arrive on ``control``
    (the supervisor's: a worker's number, with its end of a socket pair)."""
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(stop, selectors.EVENT_READ, "stop")
    lines: list[_Line] = []
    queued: list[tuple[_Line, int, Op]] = []
    try:
        while True:
            for key, _ in selector.select(timeout=0 if queued else None):
                if key.data == "stop":
                    return
                if key.data == "control":
                    line = _receive_line(control)
                    if line is None:
                        return  # the supervisor is gone
                    lines.append(line)
                    selector.register(line.sock, selectors.EVENT_READ, line)
                    continue
                line = key.data
                if not _read_line(store, line, queued):
                    selector.unregister(line.sock)
                    line.sock.close()
                    lines.remove(line)
            if queued:
                batch, queued = queued[:MAX_BATCH], queued[MAX_BATCH:]
                _commit(store, batch)
                _answer(batch)
    finally:
        selector.close()
        for line in lines:
            line.sock.close()


def _receive_line(control: socket.socket) -> _Line | None:
    try:
        data, fds, _, _ = socket.recv_fds(control, 64, 1)
    except OSError:
        return None
    if not fds:
        return None
    sock = socket.socket(fileno=fds[0])
    sock.setblocking(True)
    return _Line(sock, data.decode("ascii", "replace"))


def _read_line(store: SQLStore, line: _Line, queued: list[tuple[_Line, int, Op]]) -> bool:
    """Queue the operations that arrived on ``line``; False once it is closed or sent something not a request
    (the line is then dropped: only a worker holds its other end)."""
    try:
        data = line.sock.recv(1 << 20)
    except OSError:
        return False
    if not data:
        return False
    try:
        for frame in line.frames.feed(data):
            rid, name, args, key = _load(frame)
            if name not in OPS or not isinstance(args, tuple) or not isinstance(rid, int):
                raise ValueError("not a write operation")
            queued.append((line, rid, Op(store.operation(name, args), str(key), waits=False)))
    except Exception as exc:  # noqa: BLE001 - anything malformed drops the line, never the writer
        log.error("writer: worker %s sent a malformed request (%s); its line is closed", line.worker,
                  type(exc).__name__)
        return False
    return True


def _commit(store: SQLStore, batch: list[tuple[_Line, int, Op]]) -> None:
    """Commit ``batch`` in one durable transaction (SQLStore.commit_batch). Syncing in a second thread while this
    one commits the next batch was tried: batches of 4 operations instead of 19, and more CPU per message
    (docs/relay-protocol.md, "The writer process")."""
    try:
        store.commit_batch(lambda: [op for _, _, op in batch])
    except Exception as exc:  # noqa: BLE001 - the writers' turn could not be had: nothing was written
        log.warning("writer: batch not committed (%s)", type(exc).__name__)
        SQLStore._failed([op for _, _, op in batch], exc)


def _answer(done: list[tuple[_Line, int, Op]]) -> None:
    """Each operation's result or refusal, in one frame per worker."""
    answers: dict[_Line, list[tuple[int, RelayError | None, Any]]] = {}
    for line, rid, op in done:
        error = op.error
        if error is not None and not isinstance(error, RelayError):
            log.error("writer: a batch failed: %s", type(error).__name__)
            error = Unavailable()
        answers.setdefault(line, []).append((rid, error, None if error is not None else op.value))
    for line, items in answers.items():
        with contextlib.suppress(OSError):  # a worker gone: its line is dropped when read
            line.sock.sendall(_frame(items))


# -- a worker's link -------------------------------------------------------------------------------------


class _Waiting:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.value: Any = None


class _Link:
    """One line to one writer, and the writes waiting on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.waiting: dict[int, _Waiting] = {}
        self.closed = False


class WriterLink:
    """A worker's way to the writer process (``SQLStore.use_writer``): :meth:`call` sends one write and waits for
    its answer. New lines (the first, and one to each restarted writer) arrive on ``control``."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._link: _Link | None = None
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._started = False
        self._closed = False
        self._threads = [threading.Thread(target=self._take_lines, name="otc-relay-writer-lines", daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        """Take no more lines and drop the current one (the store is closing)."""
        with self._changed:
            self._closed = True
            link, self._link = self._link, None
            self._changed.notify_all()
        for sock in [self._control] + ([link.sock] if link is not None else []):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self._control.close()

    def call(self, name: str, args: tuple, key: str) -> Any:
        link = self._current(LINK_WAIT_S if self._started else START_WAIT_S)
        waiting = _Waiting()
        rid = next(self._ids)
        frame = _frame((rid, name, args, key))
        with link.send_lock:
            if link.closed:
                raise Unavailable()
            link.waiting[rid] = waiting
            try:
                link.sock.sendall(frame)
            except OSError:
                link.waiting.pop(rid, None)
                raise Unavailable() from None
        waiting.done.wait()
        self._started = True
        if waiting.error is not None:
            raise waiting.error
        return waiting.value

    def _current(self, wait: float) -> _Link:
        with self._changed:
            self._changed.wait_for(lambda: self._link is not None or self._closed, timeout=wait)
            if self._link is None:
                log.warning("store unavailable: no writer process")
                raise Unavailable()
            return self._link

    def _take_lines(self) -> None:
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self._control, 16, 1)
            except OSError:
                fds = []
            if not fds:
                with self._changed:
                    self._closed = True
                    self._changed.notify_all()
                return
            link = _Link(socket.socket(fileno=fds[0]))
            link.sock.setblocking(True)
            with self._changed:
                if self._closed:
                    link.sock.close()
                    return
                self._link = link
                self._changed.notify_all()
            answers = threading.Thread(target=self._answers, args=(link,), name="otc-relay-writer-answers",
                                       daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [answers]
            answers.start()

    def _answers(self, link: _Link) -> None:
        frames = _Frames()
        try:
            while True:
                data = link.sock.recv(1 << 20)
                if not data:
                    break
                for frame in frames.feed(data):
                    for rid, error, value in _load(frame):
                        waiting = link.waiting.pop(rid, None)
                        if waiting is not None:
                            waiting.error, waiting.value = error, value
                            waiting.done.set()
        except (OSError, ValueError, pickle.UnpicklingError) as exc:
            log.warning("writer line: %s", type(exc).__name__)
        # The writer is gone: what it was asked and did not answer may or may not be committed, and nobody was
        # told it was; the clients retry.
        with self._changed:
            if self._link is link:
                self._link = None
        with link.send_lock:
            link.closed = True
            left, link.waiting = link.waiting, {}
        for waiting in left.values():
            # Sent whole and not answered: the writer may have committed it (its answer lost), so whatever the
            # write names must stay (a raw part's content file: an outside review, R2, found a committed part's
            # file unlinked and the retry answered as a duplicate). The client retries under its key.
            waiting.error = NotDurable()
            waiting.done.set()
        with contextlib.suppress(OSError):
            link.sock.close()


class StopPipe:
    """A socket (``reader``) that becomes readable once :meth:`ring` is called (from a signal handler too)."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self._previous: int | None = None  # the wakeup fd before ring_on_signals
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def ring(self) -> None:
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def ring_on_signals(self) -> None:
        """Every signal with a Python handler rings it too, from whichever thread the kernel delivered it to (the
        main thread, waiting on ``reader``, would otherwise never run the handler). Main thread only."""
        self._previous = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)

    def close(self) -> None:
        if self._previous is not None:
            signal.set_wakeup_fd(self._previous)
            self._previous = None
        self.reader.close()
        self._writer.close()
