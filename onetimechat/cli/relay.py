"""`otc relay ...`: run the untrusted relay (DESIGN.md, docs/relay-protocol.md)."""

from __future__ import annotations

import argparse
import logging
import re
import sys

from onetimechat.cli.common import command_group
from onetimechat.net import listen_failure
from onetimechat.serving import interrupt, on_stop_signals
from relay.config import DAY, RelayConfig, describe_db, parse_db_url
from relay.errors import ConfigError
from relay.server import DEFAULT_THREADS, RelayServer, parse_listen
from relay.storage.schema import LATEST

_SIZE_RE = re.compile(r"(\d+)\s*([kmg]?)(i?b)?", re.IGNORECASE)


def _size(text: str) -> int:
    """``2097152``, ``2M``, ``64KiB`` -> bytes (powers of 1024)."""
    m = _SIZE_RE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 65536, 64K or 2M)")
    return int(m.group(1)) * 1024 ** "_kmg".index(m.group(2).lower() or "_")


def _positive(kind: type) -> object:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
        return value

    return parse


def register(parts: argparse._SubParsersAction) -> None:
    sub = command_group(parts, "relay", "the untrusted relay (a mailbox server)",
                        "The relay stores and forwards packages between mailboxes. It never sees plaintext or "
                        "keys; see docs/relay-protocol.md for what it sees.")
    d = RelayConfig()
    p = sub.add_parser("serve", help="run the relay",
                       description="Serve the relay on exactly one address with a production WSGI server "
                       "(waitress). Storage is a SQLite file by default; a postgresql:// URL lets several "
                       "relay processes share one store.")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="the address to bind, such as 127.0.0.1:8080 or 0.0.0.0:8080 (port 0: any free port)")
    p.add_argument("--db", default="", metavar="URL",
                   help="sqlite:///relative.db, sqlite:////absolute.db or postgresql://... "
                   "(default: onetimechat/relay/relay.db in the user data directory)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"server threads; each long poll holds one (default {DEFAULT_THREADS})")
    p.add_argument("--workers", type=_positive(int), default=1,
                   help="worker processes serving the one address and store, each with --threads threads "
                        "(default 1; see docs/relay-protocol.md, \"Worker processes\", for what limits mean then)")
    p.add_argument("--writer", action=argparse.BooleanOptionalAction, default=None,
                   help="run every write in one writer process that the workers send them to (default: on "
                        "PostgreSQL with one worker)")
    p.add_argument("--max-waits", type=_positive(int), default=None,
                   help="long polls held at once (default: three quarters of --threads)")
    p.add_argument("--waits-per-address", type=_positive(int), default=d.max_waits_per_address,
                   help=f"long polls held at once per client address, 0 for no cap (default {d.max_waits_per_address})")
    p.add_argument("--rate-limit", type=_positive(float), default=d.rate_limit, metavar="PER_SECOND",
                   help=f"requests per second per client address, 0 for no limit (default {d.rate_limit:g})")
    p.add_argument("--burst", type=_positive(int), default=d.rate_burst,
                   help=f"requests a client address may make at once (default {d.rate_burst})")
    p.add_argument("--trusted-proxy", metavar="ADDRESS",
                   help="a load balancer's address whose X-Forwarded-For names the client")
    p.add_argument("--max-message", type=_size, default=d.max_message_bytes, metavar="BYTES",
                   help=f"largest message (default {d.max_message_bytes >> 20}M)")
    p.add_argument("--mailbox-messages", type=_positive(int), default=d.mailbox_max_messages,
                   help=f"most messages one mailbox holds (default {d.mailbox_max_messages})")
    p.add_argument("--mailbox-bytes", type=_size, default=d.mailbox_max_bytes, metavar="BYTES",
                   help=f"most bytes one mailbox holds (default {d.mailbox_max_bytes >> 20}M)")
    p.add_argument("--expire-days", type=_positive(float), default=d.expire_seconds / DAY,
                   help=f"days an unacknowledged message is kept (default {d.expire_seconds / DAY:g})")
    p.add_argument("--connections-per-address", type=_positive(int), default=d.connections_per_address,
                   help="open connections per client address, 0 for no cap "
                        f"(default {d.connections_per_address})")
    p.add_argument("--address-bytes", type=_size, default=d.address_max_bytes, metavar="BYTES",
                   help="most bytes of messages stored from one client address, 0 for no cap "
                        f"(default {d.address_max_bytes >> 20}M)")
    p.add_argument("--address-mailboxes", type=_positive(int), default=d.address_new_mailboxes,
                   help="most new mailboxes one client address may make a day, 0 for no cap "
                        f"(default {d.address_new_mailboxes})")
    p.add_argument("--min-free", type=_size, default=d.min_free_bytes, metavar="BYTES",
                   help="refuse new messages (507) while the store's disk has less free than this, 0 for no "
                        f"check (default {d.min_free_bytes >> 20}M; SQLite only)")
    p.add_argument("--db-pool", type=_positive(int), default=d.db_pool,
                   help=f"store connections per process (default {d.db_pool})")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("new-identity", help="give a store restored from a backup a new identity",
                       description="Run this after restoring a relay's store from a backup, with every relay "
                       "process of that store stopped, before starting them again. A restored store numbers its "
                       "messages from where the backup was, below the refs laptops have read; under its old "
                       "identity their next acknowledgements would delete its new messages unread. Under a new "
                       "one they read it from the start (docs/relay-protocol.md, \"Store identity\").")
    p.add_argument("--db", default="", metavar="URL",
                   help="the restored store: sqlite:///relative.db, sqlite:////absolute.db or postgresql://... "
                   "(default: onetimechat/relay/relay.db in the user data directory)")
    p.set_defaults(func=cmd_new_identity)


def cmd_new_identity(args: argparse.Namespace) -> int:
    from relay.storage import open_store

    config = RelayConfig(db=args.db)
    # Alone: only a store that exists (none is made), and only while no relay has it open (a running relay keeps
    # the identity it read at its start: its laptops would go on deleting the restored store's new messages).
    store = open_store(config.db, pool_size=1, alone=True)
    try:
        old, new = store.new_store_id()
    finally:
        store.close()
    print(f"otc relay: {describe_db(config.db)}: store identity {old or '(none yet)'} replaced by {new}; start "
          f"the relay again (laptops will read it from the start)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from relay.app import create_app

    host, port = parse_listen(args.listen)
    threads = max(4, args.threads)
    config = RelayConfig(
        db=args.db, max_message_bytes=args.max_message, mailbox_max_messages=args.mailbox_messages,
        mailbox_max_bytes=args.mailbox_bytes, expire_seconds=args.expire_days * DAY,
        rate_limit=args.rate_limit, rate_burst=args.burst,
        max_waits=args.max_waits if args.max_waits is not None else threads * 3 // 4,
        max_waits_per_address=args.waits_per_address, db_pool=max(1, args.db_pool),
        connections_per_address=args.connections_per_address, address_max_bytes=args.address_bytes,
        address_new_mailboxes=args.address_mailboxes, min_free_bytes=args.min_free)
    logging.basicConfig(level=logging.INFO, format="otc relay: %(levelname)s %(message)s", stream=sys.stderr)
    # The writer process pays on PostgreSQL with one worker, and not with several now that a batch is one
    # round trip, nor on SQLite (docs/relay-protocol.md, "The writer process", "A batch in one round trip").
    writer = args.writer if args.writer is not None else (
        parse_db_url(config.db)[0] == "postgresql" and args.workers == 1)
    if writer:
        from relay.writer import MAX_FRAME

        # A send goes to the writer in one frame; one over its bound would cut the worker off (red team
        # relay-s31 R4: every later write of that worker answered 503).
        most = (MAX_FRAME - 1024 * 1024) >> 20
        if config.max_message_bytes > most << 20:
            raise ConfigError(f"With the writer process (the default on PostgreSQL with one worker) a message is at "
                              f"most {most}M: lower --max-message, or add --no-writer.")
    if args.workers > 1 or writer:
        return _serve_workers(args, config, host, port, threads, writer)
    app = create_app(config)
    relay = app.extensions["otc_relay"]
    try:
        server = RelayServer(app, host, port, threads=threads, trusted_proxy=args.trusted_proxy)
    except OSError as exc:
        relay.close()
        raise ConfigError(listen_failure(args.listen, exc)) from None
    _storage_line(config, relay.store.found_version)
    print(f"otc relay: listening on {server.url} ({threads} threads)", flush=True)
    on_stop_signals(interrupt)
    server.serve_until_interrupted()
    print("otc relay: stopped", flush=True)
    return 0


def _storage_line(config: RelayConfig, found: int) -> None:
    state = "new" if found == 0 else f"upgraded from v{found}" if found < LATEST else "existing"
    print(f"otc relay: storage {describe_db(config.db)} (schema v{LATEST}, {state})", flush=True)


def _serve_workers(args: argparse.Namespace, config: RelayConfig, host: str, port: int, threads: int,
                   writer: bool) -> int:
    """--workers N: the store opened (and upgraded) once here, the socket bound here, then N forked workers
    (relay/workers.py), and with ``writer`` the writer process their writes go to (relay/writer.py)."""
    from relay import workers
    from relay.storage import open_store

    store = open_store(config.db, pool_size=1)
    found = store.found_version
    store.close()
    try:
        sock = workers.bind(host, port)
    except OSError as exc:
        raise ConfigError(listen_failure(args.listen, exc)) from None
    _storage_line(config, found)
    name, bound = sock.getsockname()[:2]
    url = f"http://[{name}]:{bound}" if ":" in name else f"http://{name}:{bound}"

    def started(n: int, pid: int) -> None:
        print(f"otc relay: worker {n} of {args.workers}: pid {pid}" if n else f"otc relay: writer process, pid {pid}",
              flush=True)

    try:
        status = workers.serve(sock, config, args.workers, threads, args.trusted_proxy, started,
                               listening=lambda: print(f"otc relay: listening on {url} ({args.workers} "
                                                       f"worker{'s' if args.workers > 1 else ''} of "
                                                       f"{threads} threads)", flush=True),
                               writer=writer)
    finally:
        sock.close()
    print("otc relay: stopped", flush=True)
    return status
