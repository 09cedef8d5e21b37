"""The relay's settings, and where its store lives."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.errors import ConfigError

KiB, MiB = 1 << 10, 1 << 20
DAY = 86400.0


@dataclass(frozen=True)
class RelayConfig:
    """Everything `create_app` needs. Defaults suit a public relay."""

    #: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, a bare path, or ``postgresql://...``.
    db: str = ""
    #: Largest ``contents`` of one message, in UTF-8 bytes. A 1 MiB package is 1.4 MB of base64.
    max_message_bytes: int = 2 * MiB
    #: Per mailbox: most messages and bytes kept until they are acknowledged or expire.
    mailbox_max_messages: int = 10_000
    mailbox_max_bytes: int = 64 * MiB
    #: Unacknowledged messages (and idempotency keys) are deleted after this long.
    expire_seconds: float = 30 * DAY
    #: Longest long poll a client may ask for.
    max_wait: float = 60.0
    #: Most messages in one answer, and most mailboxes one request may read.
    max_batch: int = 1000
    max_mailboxes: int = 64
    #: Rough cap on the bytes of contents in one answer (at least one message is always sent).
    max_answer_bytes: int = 8 * MiB
    #: Requests per second per client address (a token bucket); 0 turns the limit off.
    rate_limit: float = 50.0
    rate_burst: int = 200
    #: Long polls held at once per process, and per client address (0: no per-address cap).
    max_waits: int = 96
    max_waits_per_address: int = 32
    #: Open connections per client address (more are closed at once), and how long a client has to send a
    #: request's headers, and the whole request, once it starts one (slowloris; onetimechat/serving.py).
    connections_per_address: int = 64  # 0: no cap
    #: Per client address (per /64 for IPv6): most bytes of messages it may have stored at once, counted until
    #: they are acknowledged or expire, and most new mailboxes it may make per day. 0 turns either off.
    address_max_bytes: int = 256 * MiB
    address_new_mailboxes: int = 1000
    #: All the /64s of one IPv6 /48 together get this many times each per-address cap and budget (connections,
    #: requests per second, stored bytes, new mailboxes, presence), so a /56 (256 /64s) or a /48 (65,536) buys
    #: no more than this; 0 gives the /48 no cap of its own (onetimechat/net.py).
    block_shares: int = 4
    #: New messages are refused (507, Retry-After) while the store's filesystem has less free space than this
    #: (SQLite; a PostgreSQL server watches its own disk). 0 turns the check off.
    min_free_bytes: int = 1024 * MiB
    header_timeout: float = 10.0
    request_timeout: float = 300.0
    #: Presence: default and longest time an announcement lasts without renewal.
    presence_ttl: float = 120.0
    presence_max_ttl: float = 3600.0
    max_presence_list: int = 1000
    #: Presence quotas (issue 19): announcements per second per client address (a token bucket of
    #: ``presence_burst``), handles online at once per address and in all. 0 turns either off.
    presence_rate: float = 5.0
    presence_burst: int = 300
    presence_per_address: int = 256
    max_presence: int = 100_000
    #: How often expired messages, keys and presence are swept (reads ignore them at once).
    sweep_interval: float = 60.0
    #: Connections to the store per process.
    db_pool: int = 16

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RelayConfig:
        """A config from a dict of field names (Flask's ``create_app(config)`` style)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"Unknown relay setting(s): {', '.join(unknown)}.")
        return cls(**dict(values))

    def max_request_bytes(self) -> int:
        """Largest request body: one message, JSON-escaped, plus the other fields."""
        return 2 * self.max_message_bytes + 64 * KiB


def default_db_path() -> Path:
    """The embedded store's file when no --db is given: the platform's user data directory."""
    import platformdirs

    return platformdirs.user_data_path("onetimechat", appauthor=False) / "relay" / "relay.db"


def parse_db_url(url: str) -> tuple[str, str]:
    """``(kind, target)``: ``("sqlite", path)`` or ``("postgresql", conninfo)``."""
    if not url:
        return "sqlite", str(default_db_path())
    lowered = url.lower()
    if lowered.startswith(("postgresql://", "postgres://")):
        return "postgresql", url
    if lowered.startswith("sqlite:"):
        # SQLAlchemy's spelling: sqlite:///relative/path and sqlite:////absolute/path.
        rest = url[len("sqlite:"):]
        if not rest.startswith("///") or len(rest) == 3:
            raise ConfigError("A SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db.")
        return "sqlite", rest[3:]
    if "://" in url:
        raise ConfigError(f"Unknown store URL scheme in {url.split('://')[0]!r}: use sqlite:/// or postgresql://.")
    return "sqlite", url


def describe_db(url: str) -> str:
    """Where the store is, for the start-up line (no password)."""
    kind, target = parse_db_url(url)
    if kind == "sqlite":
        return f"SQLite file {Path(target).resolve()}"
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(target)
        where = f"{parts.hostname or 'local socket'}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    except ValueError:
        where = "(unparsed URL)"
    return f"PostgreSQL {where}"
