"""`otc relay serve --workers N`: N worker processes serving one listening socket and one store.

One relay process is bound by Python's interpreter lock to about one core. With ``--workers N`` the parent
binds the listening socket, makes the rate limit buckets in shared memory (relay/ratelimit.py), and forks N
workers; each builds its own app (store connections, long polls, expiry sweeper, store watcher) and serves the
inherited socket with its own guarded waitress server (onetimechat/serving.py). The kernel hands each new
connection to whichever worker accepts it first, and the connection stays with that worker.

What crosses processes, and how (docs/relay-protocol.md, "Worker processes"):

* messages, quotas and presence are in the store, shared as they already were by separate relay processes;
* a long poll in one worker is woken by a send in another through the store's watcher: PostgreSQL's
  LISTEN/NOTIFY, or for SQLite an inotify doorbell each commit rings, then ``PRAGMA data_version``
  (relay/storage/sqlite.py);
* rate limits: the workers share one set of buckets, so N workers allow what one does;
* per worker: the open connections per address (each worker's guard counts its own, so one address may hold
  N times ``--connections-per-address`` in all), the long polls held (``--max-waits``, ``--waits-per-address``:
  each holds one of that worker's threads), and ``--threads``.

Writes (``writer=True``; the command line sets it on PostgreSQL with one worker): a writer process, forked first,
runs every worker's writes (relay/writer.py). The parent keeps a control line (a socket pair) to the writer
and to each worker; for each worker it makes a socket pair and hands one end to the writer and the other to
the worker over their control lines (SCM_RIGHTS), at start and whenever either is started again. No path
names a line: only the writer and its workers hold one.

Supervision: the parent serves nothing. SIGTERM, SIGINT or SIGHUP to it stops every worker the way one relay stops
(running requests finish, long polls answer), waits for them, and exits 0. A worker that dies is reported on
stderr and started again, unless it died within ``START_GRACE_S`` of being started (it cannot start: a store
it cannot open, say): then the parent stops the others and exits 1, for the service manager to see. The
writer is supervised the same way; while it is down the workers answer writes 503 ``unavailable``. On stopping,
the workers stop first (their running requests may still write), then the writer. Each child asks the kernel
to send it SIGTERM if the parent dies (Linux), so none is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from onetimechat.serving import STOP_SIGNALS, interrupt, on_stop_signals
from relay.config import RelayConfig
from relay.ratelimit import Limiters
from relay.writer import link as writer_line

log = logging.getLogger("otc.relay")

# A worker that exits sooner than this after being started is taken for one that cannot start.
START_GRACE_S = 2.0
# How long the workers get to stop (a relay lets running requests finish for 30 s) before they are killed.
STOP_WAIT_S = 50.0
BACKLOG = 1024
_SIGNALS = STOP_SIGNALS
PR_SET_PDEATHSIG = 1


class _Stopping(Exception):
    """SIGTERM, SIGINT or SIGHUP reached the parent."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, as waitress would bind it (OSError if it cannot)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:
    """Linux: SIGTERM to this process when its parent dies (nothing elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _child(parent: int, on_stop: Callable[[], None]) -> bool:
    """A forked child's signals: ``on_stop()`` at the first SIGTERM, SIGINT or SIGHUP (the next ones do nothing),
    and SIGTERM when the parent dies. False if the parent died already."""
    on_stop_signals(on_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    _die_with_parent()
    return os.getppid() == parent


def _worker(sock: socket.socket, config: RelayConfig, threads: int, trusted_proxy: str | None,
            limiters: Limiters, parent: int, control: socket.socket | None) -> int:
    """A forked worker's life: serve the shared socket until SIGTERM, SIGINT or SIGHUP, then stop as one relay does.
    With a ``control`` line, its writes go to the writer process (relay/writer.py)."""
    from relay.app import create_app
    from relay.server import RelayServer
    from relay.storage import open_store
    from relay.storage.sql import SQLStore
    from relay.writer import WriterLink

    if not _child(parent, interrupt):
        return 0  # the parent died before we could ask to follow it
    server = None
    try:
        store = None
        if control is not None:
            store = open_store(config.db, pool_size=config.db_pool)
            assert isinstance(store, SQLStore)
            store.use_writer(WriterLink(control))
        app = create_app(config, store=store, limiters=limiters)
        host, port = sock.getsockname()[:2]
        server = RelayServer(app, host, port, threads=threads, trusted_proxy=trusted_proxy, sock=sock)
        server.serve_until_interrupted()
    except KeyboardInterrupt:
        pass
    finally:
        on_stop_signals(lambda: None)  # stopping: a later signal changes nothing
        if server is not None:
            server.close()
    return 0


def _writer(config: RelayConfig, parent: int, control: socket.socket) -> int:
    """The writer process's life (relay/writer.py): run the workers' writes until SIGTERM, SIGINT or SIGHUP."""
    from relay.storage import open_store
    from relay.storage.sql import SQLStore
    from relay.writer import StopPipe, serve_writer

    stop = StopPipe()
    if not _child(parent, stop.ring):
        return 0
    stop.ring_on_signals()
    store = open_store(config.db, pool_size=1)
    assert isinstance(store, SQLStore)
    try:
        serve_writer(store, control, stop.reader)
    finally:
        store.close()
        stop.close()
    return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _control_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def serve(sock: socket.socket, config: RelayConfig, workers: int, threads: int, trusted_proxy: str | None,
          started: Callable[[int, int], None], listening: Callable[[], None] = lambda: None,
          writer: bool = False) -> int:
    """Fork ``workers`` workers on ``sock`` (with ``writer``, and a writer process for their writes first) and
    supervise them until SIGTERM, SIGINT or SIGHUP; the exit status. ``started(n, pid)`` is told of each worker started
    (n from 1; 0 is the writer), restarted ones too; ``listening()`` once all are. Call it with no threads running
    (it forks)."""
    limiters = Limiters.of(config, shared=True)
    parent = os.getpid()
    pids: dict[int, tuple[int, float]] = {}  # pid -> (worker number, when started); the writer is number 0
    controls: dict[int, socket.socket] = {}  # number -> the parent's end of its control line (with a writer)

    def link(n: int) -> None:
        """A line from worker ``n`` to the writer, its ends handed to both."""
        if 0 not in controls or n not in controls:
            return
        try:
            writer_line(controls[0], controls[n], n)
        except OSError as exc:  # one of them is gone; it is linked again when started again
            log.warning("could not link worker %d to the writer: %s", n, exc.strerror)

    def spawn(n: int) -> None:
        control = child_end = None
        if writer:
            control, child_end = _control_pair()
        sys.stdout.flush()
        sys.stderr.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # no stop between fork and recording the pid
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for other in [*controls.values(), control]:
                        if other is not None:
                            other.close()  # a line's end only in its two processes
                    if n == 0:
                        assert child_end is not None
                        sock.close()  # the writer serves no clients
                        code = _writer(config, parent, child_end)
                    else:
                        code = _worker(sock, config, threads, trusted_proxy, limiters, parent, child_end)
                except BaseException as exc:  # noqa: BLE001 - a worker reports and exits, never returns
                    log.error("%s failed: %s", f"worker {n}" if n else "the writer", type(exc).__name__)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            pids[pid] = (n, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            if child_end is not None:
                child_end.close()
        if control is not None:
            old = controls.pop(n, None)
            if old is not None:
                old.close()
            controls[n] = control
            if n == 0:
                for worker in sorted(controls):
                    if worker:
                        link(worker)
            else:
                link(n)
        started(n, pid)

    def on_stop() -> None:
        raise _Stopping

    previous = {number: signal.getsignal(number) for number in _SIGNALS}
    on_stop_signals(on_stop)
    status = 0
    try:
        for n in range(0 if writer else 1, workers + 1):
            spawn(n)
        listening()
        while True:
            pid, how = os.waitpid(-1, 0)
            if pid not in pids:
                continue
            n, since = pids.pop(pid)
            name = f"worker {n}" if n else "the writer"
            if time.monotonic() - since < START_GRACE_S:
                log.error("%s (pid %d) %s as it started; stopping the relay", name, pid, _describe(how))
                status = 1
                break
            log.warning("%s (pid %d) %s; starting it again", name, pid, _describe(how))
            spawn(n)
    except (KeyboardInterrupt, _Stopping):
        pass
    finally:
        on_stop_signals(lambda: None)  # stopping: a later signal changes nothing
        # The workers first: their running requests may still write.
        writers = {pid: pids.pop(pid) for pid, (n, _) in list(pids.items()) if n == 0}
        _stop_all(pids)
        _stop_all(writers)
        for control in controls.values():
            control.close()
        for number, handler in previous.items():
            if handler is not None:  # None: not set from Python
                signal.signal(number, handler)
    return status


def _stop_all(pids: dict[int, tuple[int, float]]) -> None:
    """SIGTERM every worker, wait for all (SIGKILL past STOP_WAIT_S), and reap them."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while pids:
        for pid in list(pids):
            try:
                done, how = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, how = pid, 0
            if done:
                n, _ = pids.pop(pid)
                if how and not (os.WIFEXITED(how) and os.WEXITSTATUS(how) == 0):
                    log.warning("%s (pid %d) %s while stopping", f"worker {n}" if n else "the writer", pid,
                                _describe(how))
        if pids and time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        if pids:
            time.sleep(0.05)
