"""The relay's store: one interface, two implementations.

:class:`Store` is everything the relay keeps: mailboxes (a name and the ref
the next message will get), messages (ciphertext with its routing id, an
optional self-declared sender and two times), idempotency keys and presence.
``sqlite.py`` is the embedded default (WAL, synced commits); ``postgres.py``
lets several relay processes share one store. ``sql.py`` holds the algorithms
both run, so the two differ only in connections, locking and schema DDL.

Refs are numbered per mailbox, from 1, in commit order: a reader that keeps
the last ref it saw never misses a message, even with many writers.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.config import RelayConfig, parse_db_url

#: The first byte of a message's stored contents when they were sent as raw bytes (``/v1/send-bin``: a file's
#: part), the raw bytes after it. Text contents are stored as their UTF-8, which never begins with 0xFF.
RAW_MARK = b"\xff"
#: The first byte of a message's stored contents when its raw bytes are kept in a content file beside the store
#: (relay/parts.py: SQLite keeps a large value in a chain of small pages), the file's name (ASCII) after it.
FILE_MARK = b"\xfe"


@dataclass(frozen=True)
class Message:
    mailbox: str
    ref: int
    sender: str
    contents: str  # text; "" for a message sent as raw bytes
    sent_at: float
    expires_at: float
    raw: bytes | None = None  # the bytes of a message sent as raw bytes
    stored: str | None = None  # the name of the content file that holds them, until the relay reads it


@dataclass(frozen=True)
class Sent:
    """The outcome of a send: its ref, and whether the idempotency key had been seen."""

    ref: int
    expires_at: float
    duplicate: bool = False


@dataclass(frozen=True)
class Presence:
    handle: str
    since: float
    expires_at: float


@dataclass(frozen=True)
class Limits:
    """Quotas the store enforces inside the send transaction: per mailbox, per client address (origin), and for
    all the origins of one IPv6 /48 (its block) together, ``block_shares`` times an origin's. 0: no cap."""

    max_messages: int
    max_bytes: int
    origin_max_bytes: int = 0  # bytes stored from one origin, MESSAGE_OVERHEAD a message included
    origin_new_mailboxes: int = 0  # mailboxes one origin may make per window
    new_mailbox_window: float = 86400.0
    origin_presence: int = 0  # presence handles live at once per origin
    max_presence: int = 0  # and in all
    block_shares: int = 0

    @classmethod
    def of(cls, config: RelayConfig) -> Limits:
        """The quotas ``config`` sets (its address caps are the origin caps)."""
        return cls(config.mailbox_max_messages, config.mailbox_max_bytes, origin_max_bytes=config.address_max_bytes,
                   origin_new_mailboxes=config.address_new_mailboxes, origin_presence=config.presence_per_address,
                   max_presence=config.max_presence, block_shares=config.block_shares)

    @property
    def block_max_bytes(self) -> int:
        return self.origin_max_bytes * self.block_shares

    @property
    def block_new_mailboxes(self) -> int:
        return self.origin_new_mailboxes * self.block_shares

    @property
    def block_presence(self) -> int:
        return self.origin_presence * self.block_shares


#: What one stored message costs its origin besides its contents (its row, ids and index entries).
MESSAGE_OVERHEAD = 256


class Store(abc.ABC):
    """What the relay keeps. Every method is safe to call from many threads."""

    #: "sqlite" or "postgresql".
    kind: str = ""
    #: The schema version the store had before this process opened it (0: a new store).
    found_version: int = 0

    @abc.abstractmethod
    def send(self, mailbox: str, sender: str, contents: bytes, client_id: str | None, now: float,
             expires_at: float, limits: Limits, origin: str = "", block: str = "", size: int | None = None) -> Sent:
        """Store one message durably and return its ref; raises MailboxFull, AddressQuota or
        TooManyMailboxes over quota. ``origin`` names the sending address (a keyed hash of its IPv4 address
        or IPv6 /64), ``block`` its IPv6 /48 (likewise; '' for IPv4). ``size``: the bytes it counts as, if not
        its ``contents``' (a message whose bytes are in a content file, relay/parts.py)."""

    @abc.abstractmethod
    def origin_key(self) -> int:
        """The store's secret for hashing client addresses into origins (made on first use)."""

    @abc.abstractmethod
    def store_id(self) -> str:
        """The store's identity: 16 hex digits, random, made once on first use and kept with the store (a copy of
        its files keeps it; a new store gets another). Readers' cursors are refs of one store; this tells them
        when the store behind an address is another (docs/relay-protocol.md, "Store identity")."""

    @abc.abstractmethod
    def new_store_id(self) -> tuple[str | None, str]:
        """Give the store a new identity, random like the first: for a store restored from a backup, whose refs
        went back (``otc relay new-identity``, on a store opened ``alone``). Returns (the old identity, None if it
        had none yet, and the new one)."""

    def disk_path(self) -> str | None:
        """A path on the filesystem the store writes to, if it is local (for the free-space watermark)."""
        return None

    @abc.abstractmethod
    def fetch(self, cursors: Sequence[tuple[str, int]], limit: int, max_bytes: int,
              now: float) -> tuple[list[Message], bool]:
        """Live messages with ref > cursor, per mailbox in the order given; and whether that was all."""

    def part_files(self, limit: int = 100_000) -> list[tuple[str, int, str]]:
        """(mailbox, ref, file name) of the messages kept in content files (relay/parts.py). A store that keeps
        none: []."""
        return []

    @abc.abstractmethod
    def next_ref(self, mailbox: str) -> int:
        """The ref the next message to ``mailbox`` will get."""

    @abc.abstractmethod
    def ack(self, mailbox: str, through: int | None, refs: Sequence[int], now: float,
            gone: list[str] | None = None) -> int:
        """Delete delivered messages (all up to ``through``, and each of ``refs``); how many went. The names of
        the content files of those deleted are added to ``gone`` (relay/parts.py)."""

    @abc.abstractmethod
    def ack_cursors(self, cursors: Sequence[tuple[str, int]], now: float, gone: list[str] | None = None) -> int:
        """Delete every message up to each (mailbox, ref) cursor, in one transaction; as :meth:`ack`."""

    @abc.abstractmethod
    def announce(self, handle: str, token_hash: bytes, now: float, expires_at: float, origin: str = "",
                 block: str = "", limits: Limits | None = None) -> Presence | None:
        """Mark ``handle`` online until ``expires_at``; None if it is online under another token. Raises
        PresenceQuota when a new handle would pass ``limits``' presence caps (a renewal never does)."""

    @abc.abstractmethod
    def withdraw(self, handle: str, token_hash: bytes, now: float) -> bool | None:
        """Take ``handle`` offline: True; False if online under another token; None if not online."""

    @abc.abstractmethod
    def online(self, now: float, limit: int) -> list[Presence]:
        """Handles online now, by name."""

    @abc.abstractmethod
    def sweep(self, now: float, idle_before: float, gone: list[str] | None = None) -> dict[str, int]:
        """Delete what has expired, and mailboxes empty and untouched since ``idle_before``. The names of the
        content files of the messages deleted are added to ``gone``, as :meth:`ack` does."""

    @abc.abstractmethod
    def watch(self, changed: Callable[[str], None], unknown: Callable[[], None]) -> None:
        """Report commits by other processes: ``changed(mailbox)``, or ``unknown()`` when unsure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop watching and close every connection."""


def open_store(url: str, pool_size: int = 16, *, alone: bool = False) -> Store:
    """The store a ``--db`` URL names, its schema brought up to date. ``alone`` (an operator's command such as
    ``otc relay new-identity``): only an existing relay store (none is made: StoreError), and only while no relay
    process has it open (else StoreError; none can open it until this one is closed)."""
    kind, target = parse_db_url(url)
    if kind == "postgresql":
        from relay.storage.postgres import PostgresStore

        return PostgresStore(target, pool_size=pool_size, alone=alone)
    from relay.storage.sqlite import SQLiteStore

    return SQLiteStore(target, pool_size=pool_size, alone=alone)
