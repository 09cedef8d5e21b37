"""waitress, guarded against clients that hoard connections (used by the device RPC and the relay).

DESIGN.md ("Devices, relays and stores under attack"): both servers cap
connections per client address and time out requests whose headers do not
arrive. waitress alone has one global connection limit and one idle timeout,
so one address opening connections and sending nothing (slowloris) stops it
for everyone. :func:`guarded_server` adds:

* ``per_address`` -- open connections per client address; the next one is
  closed as soon as it is accepted (``exempt`` addresses, such as a trusted
  proxy that carries many clients, are not capped). An IPv6 client is counted
  by its /64, and all the /64s of one /48 together hold at most ``per_block``
  (by default ``BLOCK_SHARES`` times ``per_address``): a host that owns a /64
  or a /56 gets no more connections by hopping addresses (onetimechat/net.py);
* ``header_timeout`` -- seconds a connection has to deliver the headers of a
  request, counted from its first byte after the previous response (or, for a
  new connection, from when it opened). Bytes that complete no request (a bare
  CRLF, a header line) never count as progress: only a response served resets
  the clock;
* ``request_timeout`` -- seconds a connection has to deliver a whole request
  (headers and body), counted the same way;
* waitress's ``channel_timeout`` closes keep-alive connections idle between
  requests, measured here from the last response served, not the last byte;
* a full server makes room: when a new connection arrives while the server
  holds waitress's ``connection_limit``, the connection that has waited longest
  without being served (idle, or slowest to send its request) is closed to
  admit it, so many addresses each within their cap cannot starve a fresh
  client (a connection whose request is being answered is never closed).

* ``screen`` -- an optional :class:`BodyScreen` that judges a request by its
  method, path and Content-Length as soon as its headers arrive, and then by
  the first bytes of its body, before waitress reads (and buffers) the rest:
  a refusal is answered at once in JSON and the connection closed, so a
  client that may not send a large body never gets to (the device's
  unauthenticated ``/v1/call``).

Maintenance runs every second (waitress's ``cleanup_interval``), so a timed out
connection is closed within a second of its deadline. Sockets are polled with
``poll`` (``select`` cannot watch more than 1024). Nothing here imports waitress
until a server is built: the laptop's plain install has no server.

**The one place waitress is known.** The servers (device/server.py,
relay/server.py) use only :class:`GuardedServer`: built bound to its address
(``port`` is the one it got), served by ``run()`` or ``start()`` (a thread),
stopped by ``close()``. What the guard needs from waitress (its channel, its
parser, its accept and maintenance hooks, its task threads) is reached here and
nowhere else; waitress publishes no hooks for any of it. Its own public
``close()`` is not enough to stop a server either: it closes the listening
socket and the loop's trigger, but the loop goes on serving every open
connection, and a task that ends afterwards fails to wake it. So
:meth:`GuardedServer.close` lets the running tasks finish first, then closes
every socket inside the loop, which then returns (docs/relay-protocol.md,
"Serving").
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import FrameType
from typing import Any, Protocol, Self

from onetimechat.net import BLOCK_SHARES, client_block, client_group

# What stops a server run in the foreground: a service manager's SIGTERM, Ctrl-C, the terminal closing.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def on_stop_signals(on_stop: Callable[[], None]) -> None:
    """Call ``on_stop()`` (in the main thread) at the first of :data:`STOP_SIGNALS`; the next ones do nothing, so a
    second signal (Ctrl-C reaches every process of the group, and a parent then sends its workers SIGTERM) cannot
    cut the clean stop short. The handler stays a Python function: set to SIG_IGN while one of these signals is
    pending, Python prints "Signal 15 ignored due to race condition" with a traceback."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            on_stop()

    for number in STOP_SIGNALS:
        signal.signal(number, stop)


def interrupt() -> None:
    """An ``on_stop`` for :func:`on_stop_signals`: the main thread gets a KeyboardInterrupt, as at Ctrl-C."""
    raise KeyboardInterrupt


@dataclass(frozen=True)
class Refusal:
    """A request refused before its body is read: an HTTP status and the JSON error the servers answer with."""

    status: int
    code: str
    message: str


BUSY = Refusal(503, "busy", "Too many large requests are arriving at once; try again shortly.")


class BodyBudget:
    """The body bytes a server holds for requests being read or waiting to run, in all (memory or spooled).

    A screened request (:class:`BodyScreen`) reserves its Content-Length when the screen lets its body in, and
    gives it back when the request has been served or its connection closes. A body that does not fit is
    refused (503, in JSON) before it is read: a flood of large bodies, even under a valid-looking header, holds
    at most ``limit`` bytes, not connections times body size.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used = max(self.used - n, 0)


class BodyScreen(Protocol):
    """Judges a request before its body is read (see :func:`guarded_server`)."""

    def headers(self, method: str, path: str, length: int | None) -> Refusal | int:
        """A refusal, or how many first bytes of the body :meth:`body` wants to see (0: none). ``length`` is
        the Content-Length, None for a chunked body."""

    def body(self, method: str, path: str, head: bytes) -> Refusal | None:
        """A refusal, or None to read the rest; ``head`` is the bytes asked for (fewer if the body is shorter)."""


def _json_error(refusal: Refusal) -> Any:
    """A waitress error that answers ``refusal`` in JSON (waitress's own errors are plain text)."""
    from waitress.utilities import Error

    class JsonError(Error):  # type: ignore[misc]
        code = refusal.status
        reason = HTTPStatus(refusal.status).phrase
        otc_json = True

        def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
            body = json.dumps({"error": refusal.code, "message": refusal.message}).encode()
            return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body

    return JsonError(refusal.message)


def _as_json(error: Any) -> Any:
    """waitress's own refusal of malformed HTTP (plain text) as the servers' JSON error, with its status; a
    request the parser cannot take (501: a Transfer-Encoding it does not do) is the client's error, a 400."""
    if error is None or getattr(error, "otc_json", False):
        return error
    status = 400 if error.code == 501 or not 400 <= error.code < 500 else error.code
    code = HTTPStatus(status).phrase.lower().replace(" ", "-")
    return _json_error(Refusal(status, code, f"{HTTPStatus(status).phrase}: the request is not well formed HTTP."))


def _json_parser() -> type:
    """waitress's request parser, answering its own refusals in JSON (every server of ours does)."""
    from waitress.parser import HTTPRequestParser

    class JsonParser(HTTPRequestParser):  # type: ignore[misc]
        error: Any

        def received(self, data: bytes) -> int:
            n = int(super().received(data))
            self.error = _as_json(self.error)
            return n

    return JsonParser


def _screened_parser(screen: BodyScreen, budget: BodyBudget | None) -> type:
    from waitress.parser import HTTPRequestParser
    from waitress.utilities import RequestEntityTooLarge

    class ScreenedParser(HTTPRequestParser):  # type: ignore[misc]
        """waitress's request parser, asking ``screen`` about each request before its body is read."""

        completed: bool  # waitress's, declared for the type checker (waitress has no annotations)
        error: Any
        otc_want = -1  # -1: headers not judged yet; then how many body bytes the screen still waits for
        otc_head = b""
        otc_reserved = 0  # body bytes this request holds of the server's budget

        def otc_admit(self, size: int, n: int) -> int:
            """The screen let the body in: it must fit the server's budget, or it is refused before it is read."""
            length = int(self.content_length or 0)
            if budget is None or not length:
                return n
            if not budget.reserve(length):
                return self.otc_refuse(BUSY, size)
            self.otc_reserved = length
            return n

        def otc_release(self) -> None:
            if self.otc_reserved and budget is not None:
                budget.release(self.otc_reserved)
            self.otc_reserved = 0

        def close(self) -> None:
            super().close()
            self.otc_release()

        def received(self, data: bytes) -> int:
            n = self.otc_screen(data)
            self.error = _as_json(self.error)  # waitress's own refusals too, in JSON
            return n

        def otc_screen(self, data: bytes) -> int:
            if self.completed:
                return 0
            n = int(super().received(data))
            if isinstance(self.error, RequestEntityTooLarge) and self.headers_finished and self.otc_want < 0:
                # waitress's own limit: answer it as the screen would (in JSON) if the screen refuses too.
                self.otc_want = 0
                verdict = screen.headers(self.command, self.path, None if self.chunked else self.content_length)
                if isinstance(verdict, Refusal):
                    self.error = _json_error(verdict)
                return n
            if self.error is not None or self.empty or not self.headers_finished:
                return n
            if self.otc_want < 0:  # the headers have just arrived; any body comes in later calls
                length = None if self.chunked else int(self.content_length)
                verdict = screen.headers(self.command, self.path, length)
                if isinstance(verdict, Refusal):
                    return self.otc_refuse(verdict, len(data))
                self.otc_want = verdict if length else 0
                if self.otc_want and self.completed:  # an empty body
                    self.otc_want = 0
                    return self.otc_judge(b"", len(data), n)
                if not self.otc_want:  # no head to see: the body is let in now
                    return self.otc_admit(len(data), n)
                return n
            if self.otc_want > 0:
                self.otc_head += data[: min(n, self.otc_want - len(self.otc_head))]
                if len(self.otc_head) >= self.otc_want or self.completed:
                    self.otc_want = 0
                    return self.otc_judge(self.otc_head, len(data), n)
            return n

        def otc_judge(self, head: bytes, size: int, n: int) -> int:
            verdict = screen.body(self.command, self.path, head)
            return self.otc_admit(size, n) if verdict is None else self.otc_refuse(verdict, size)

        def otc_refuse(self, refusal: Refusal, size: int) -> int:
            # Answered at once, then the connection closes: the rest of the body is never read.
            self.otc_release()
            self.error = _json_error(refusal)
            self.completed = True
            self.connection_close = True
            self.expect_continue = False
            receiver: Any = getattr(self, "body_rcv", None)
            if receiver is not None:
                receiver.getbuf().close()
                self.body_rcv = None
            return size  # whatever else came with this read is dropped with the connection

    return ScreenedParser


@dataclass(frozen=True)
class Guard:
    """How much one client address may hold, and how long a request may take to arrive."""

    per_address: int = 16
    header_timeout: float = 10.0
    request_timeout: float = 300.0
    exempt: frozenset[str] = frozenset()  # addresses not capped ("*": none is)
    per_block: int = 0  # connections from one IPv6 /48 in all; 0: BLOCK_SHARES times per_address
    body_budget: int = 0  # body bytes held at once for screened requests, in all (BodyBudget); 0: no budget

    def exempts(self, address: str) -> bool:
        return address in self.exempt or "*" in self.exempt

    @property
    def block_cap(self) -> int:
        return self.per_block or BLOCK_SHARES * self.per_address

    def keys(self, address: str) -> tuple[str, ...]:
        """What a connection from ``address`` counts against: its group (IPv4 address or IPv6 /64), and its
        IPv6 /48 if it has one."""
        block = client_block(address)
        group = client_group(address)
        return (group,) if block is None else (group, block)


def guarded_server(app: Any, host: str, port: int, guard: Guard, screen: BodyScreen | None = None,
                   sock: socket.socket | None = None, **adjustments: Any) -> Any:
    """The waitress TCP server under a :class:`GuardedServer` (tests that drive its accept use it bare); with
    ``sock``, it serves that listening socket (bound by a parent, shared by worker processes) instead of
    binding ``host:port``."""
    from waitress.adjustments import Adjustments
    from waitress.channel import HTTPChannel
    from waitress.server import TcpWSGIServer

    budget = BodyBudget(guard.body_budget) if guard.body_budget and screen is not None else None

    class GuardedChannel(HTTPChannel):  # type: ignore[misc]
        """A connection that knows when its current request started and counts itself per address."""

        parser_class = _screened_parser(screen, budget) if screen is not None else _json_parser()

        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:  # noqa: A002
            self.otc_address = addr[0] if isinstance(addr, tuple) else str(addr)
            self.otc_keys = guard.keys(self.otc_address)
            # The clock of the current phase: when the connection opened, when the first byte after the
            # previous response arrived (otc_pending), or when the previous response was served (idle).
            self.otc_started = time.time()
            self.otc_pending = True  # the first request's clock starts when the connection opens
            self.otc_counted = True
            super().__init__(server, sock, addr, adj, map=map)

        def writable(self) -> bool:
            """waitress's, minus a busy loop (still there in waitress 3.0.2; docs/relay-protocol.md, "Serving").

            While a request's task runs, it sends its own output (``write_soon`` flushes). If the main loop
            also polls the socket for writing then, ``poll`` returns at once on every pass but the loop may not
            touch the buffer the task holds: it spins, and the interpreter lock it keeps taking is the one the
            task needs to finish. So the loop only asks to write when no task runs (it flushes leftovers once
            the task ends; waitress wakes it then), when output piles past the high watermark (the task is
            waiting for the loop), or when the connection is closing.
            """
            if self.requests and not (self.will_close or self.close_when_flushed) \
                    and self.total_outbufs_len <= self.adj.outbuf_high_watermark:
                return False
            return bool(super().writable())

        def received(self, data: bytes) -> bool:
            if data and not self.otc_pending:
                self.otc_pending = True  # the first byte after a response starts the header deadline
                self.otc_started = time.time()
            return bool(super().received(data))

        def service(self) -> None:
            super().service()
            with self.requests_lock:
                if not self.requests:  # a response was served and no further request waits
                    self.otc_started = time.time()
                    self.otc_pending = self.request is not None  # a next request had already begun

        def del_channel(self, map: Any = None) -> None:  # noqa: A002
            if self.otc_counted:
                self.otc_counted = False
                self.server.otc_release(self.otc_keys)
            # A body cut off with its connection (waitress closes only the requests it served) gives back its
            # share of the budget.
            for parser in (self.request, *self.requests):
                release = getattr(parser, "otc_release", None)
                if release is not None:
                    release()
            super().del_channel(map)

    class GuardedServer(TcpWSGIServer):  # type: ignore[misc]
        channel_class = GuardedChannel

        def __init__(self) -> None:
            self.otc_guard = guard
            self.otc_open: dict[str, int] = {}
            self.otc_lock = threading.Lock()
            self.otc_refused = 0  # connections closed at accept for being over the per-address cap
            self.otc_evicted = 0  # connections closed to make room for a new one at the connection limit
            self.otc_budget = budget
            if sock is None:
                adj = Adjustments(host=host, port=port, cleanup_interval=1, asyncore_use_poll=True, **adjustments)
                super().__init__(app, adj=adj)
                return
            # As waitress's create_server serves its ``sockets``: the socket is already bound and listening.
            adj = Adjustments(sockets=[sock], cleanup_interval=1, asyncore_use_poll=True, **adjustments)
            super().__init__(app, adj=adj, _sock=sock, bind_socket=False,
                             sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

        def readable(self) -> bool:
            # waitress stops accepting at connection_limit; here the server keeps accepting and makes room
            # in handle_accept instead (see the module docstring).
            now = time.time()
            if now >= getattr(self, "next_channel_cleanup", 0.0):
                self.next_channel_cleanup = now + self.adj.cleanup_interval
                self.maintenance(now)
            return bool(self.accepting)

        def otc_make_room(self) -> bool:
            """Close the connection waiting longest without being served; False if every one is being served."""
            waiting = [channel for channel in list(self.active_channels.values())
                       if not channel.requests and not channel.will_close and not channel.close_when_flushed
                       and not channel.total_outbufs_len]  # never cut an answer short
            if not waiting:
                return False
            victim = min(waiting, key=lambda channel: channel.otc_started)
            self.otc_evicted += 1
            victim.handle_close()
            return True

        def handle_accept(self) -> None:
            try:
                accepted = self.accept()
                if accepted is None:
                    return
                conn, addr = accepted
                self.set_socket_options(conn)
            except OSError:
                return  # the peer left before we got to it (as waitress does)
            address = addr[0] if isinstance(addr, tuple) else str(addr)
            keys = () if guard.exempts(address) else guard.keys(address)
            with self.otc_lock:
                caps = (guard.per_address, guard.block_cap)
                over = any(self.otc_open.get(key, 0) >= cap for key, cap in zip(keys, caps, strict=False))
                if not over:
                    for key in keys:
                        self.otc_open[key] = self.otc_open.get(key, 0) + 1
            if not over and len(self._map) >= self.adj.connection_limit and not self.otc_make_room():
                self.otc_release(keys)
                over = True  # every connection is being served: the new one waits its turn elsewhere
            if over:
                self.otc_refused += 1
                conn.close()
                return
            channel = self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
            channel.otc_keys = keys  # released as counted (an exempt address was not counted)

        def otc_release(self, keys: tuple[str, ...]) -> None:
            with self.otc_lock:
                for key in keys:
                    left = self.otc_open.get(key, 0) - 1
                    if left > 0:
                        self.otc_open[key] = left
                    else:
                        self.otc_open.pop(key, None)

        def maintenance(self, now: float) -> None:
            super().maintenance(now)
            for channel in list(self.active_channels.values()):
                if channel.requests or channel.will_close:
                    continue  # a request is being served; its answer is the app's business
                partial = channel.request
                waited = now - channel.otc_started
                if not channel.otc_pending and partial is None:  # idle since its last response
                    if waited > self.adj.channel_timeout:
                        channel.will_close = True
                    continue
                if (partial is None or not partial.headers_finished) and waited > guard.header_timeout:
                    channel.will_close = True
                elif waited > guard.request_timeout:
                    channel.will_close = True

    return GuardedServer()


class GuardedServer:
    """A guarded waitress server for ``app``, bound to ``host:port`` when built (port 0: a free one, which
    ``port`` then names; an OSError if it cannot listen). ``run()`` serves until ``close()``; ``start()`` runs
    it in a thread (tests, benchmarks). ``adjustments`` are waitress's (threads, connection_limit, ...). The
    device's and the relay's servers are this, with their app and settings.

    With ``sock`` it serves a socket already bound and listening instead (``host`` and ``port`` only name it):
    several worker processes then accept from one socket (``otc relay serve --workers``). Each worker guards its
    own connections, so the per-address connection cap holds per worker."""

    def __init__(self, app: Any, host: str, port: int, guard: Guard, name: str = "otc-server",
                 screen: BodyScreen | None = None, sock: socket.socket | None = None, **adjustments: Any) -> None:
        self._server = guarded_server(app, host, port, guard, screen=screen, sock=sock, **adjustments)
        self.app = app
        self.host = host
        self.port = int(self._server.effective_port)
        self.name = name
        self._thread: threading.Thread | None = None
        self._closing = False
        self._close_lock = threading.Lock()
        self._failed: Exception | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def refused(self) -> int:
        """Connections closed at accept: over an address's cap, or with every connection being served."""
        return int(self._server.otc_refused)

    @property
    def evicted(self) -> int:
        """Connections closed to make room for a new one at the connection limit."""
        return int(self._server.otc_evicted)

    def run(self) -> None:
        """Serve in this thread until :meth:`close` is called from another."""
        try:
            self._server.run()
        except Exception as exc:
            if not self._closing:  # closing without a running loop pulls sockets from under it: that is the stop
                self._failed = exc
                raise

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def serve_until_interrupted(self) -> None:
        """Serve until a KeyboardInterrupt reaches the calling (main) thread (SIGINT, or a handler that raises it
        for SIGTERM), then stop as :meth:`close` does.

        The loop runs in a thread of its own, never in the thread the signal interrupts: waitress's loop takes a
        KeyboardInterrupt for a stop of its own, waiting 5 s for every task, long polls too, before
        :meth:`close` could answer them (docs/relay-protocol.md, "Serving"). Its loop also keeps serving while
        :meth:`close` lets the running requests finish, so their answers go out whole. The main thread waits on
        a socket that every signal rings (``signal.set_wakeup_fd``): the kernel may deliver a signal to any of
        the server's threads, and a main thread blocked elsewhere would never run its Python handler."""
        ring, woken = socket.socketpair()
        ring.setblocking(False)
        woken.setblocking(False)
        ended = threading.Event()

        def run() -> None:
            try:
                self.run()
            finally:
                ended.set()
                with contextlib.suppress(OSError):
                    ring.send(b"\0")

        previous = signal.set_wakeup_fd(ring.fileno(), warn_on_full_buffer=False)
        try:
            self._thread = threading.Thread(target=run, name=self.name, daemon=True)
            self._thread.start()
            while not ended.is_set():
                select.select([woken], [], [])  # a signal's handler runs as this returns
                with contextlib.suppress(BlockingIOError):
                    woken.recv(4096)
        except KeyboardInterrupt:
            pass
        finally:
            signal.set_wakeup_fd(previous)
            ring.close()
            woken.close()
            self.close()
        if self._failed is not None:
            raise self._failed

    def close(self, timeout: float = 30.0) -> None:
        """Let running requests finish (``timeout`` seconds at most; waiting ones are dropped), then close every
        socket and stop the loop. A second call does nothing."""
        from waitress import wasyncore

        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        server = self._server
        # No new connections (a worker closes only its own copy of a shared socket). The requests being served
        # answer "Connection: close", so no client sends another on a connection that is going away; the waiting
        # ones are woken to answer now.
        self._inside_loop(lambda: wasyncore.dispatcher.close(server))
        for channel in list(server.active_channels.values()):
            for request in list(channel.requests):
                request.headers["CONNECTION"] = "close"
        self.wake()
        # First the tasks: one still running after the sockets close would fail to wake the (closed) loop.
        server.task_dispatcher.shutdown(timeout=timeout)
        # Then close every socket (keep-alive connections too) inside the loop, which then finds nothing left to
        # serve and returns.
        self._inside_loop(lambda: wasyncore.close_all(server._map))
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """Wake requests waiting for something (long polls), so they answer now: the server is stopping."""

    def _inside_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` in the serving thread if the loop runs (it iterates over the sockets), else here."""
        if self._thread is not None and self._thread.is_alive():
            try:
                self._server.trigger.pull_trigger(action)
                return
            except OSError:
                pass
        action()
