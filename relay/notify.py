"""Waking long polls when their mailboxes get mail.

Each waiting request registers one :class:`Watch` under every mailbox it
reads; a send wakes only the watches on its own mailbox (no herd). Commits
made by other processes arrive through the store's watcher. The per-process
and per-address caps on waiting requests live here too: each one holds a
server thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from relay.errors import Busy


class Watch:
    """One waiting request. Clear, look in the store, then wait: no wake-up is lost."""

    __slots__ = ("_event", "mailboxes", "address")

    def __init__(self, mailboxes: tuple[str, ...], address: str) -> None:
        self._event = threading.Event()
        self.mailboxes = mailboxes
        self.address = address

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def wake(self) -> None:
        self._event.set()


class Notifier:
    def __init__(self, max_waits: int, max_waits_per_address: int) -> None:
        self.max_waits = max_waits
        self.max_waits_per_address = max_waits_per_address
        self._lock = threading.Lock()
        self._by_mailbox: dict[str, set[Watch]] = {}
        self._by_address: dict[str, int] = {}
        self._count = 0
        self.closed = False

    def watch(self, mailboxes: Iterable[str], address: str) -> Watch:
        """Register a waiting request; raises Busy over either cap."""
        watch = Watch(tuple(dict.fromkeys(mailboxes)), address)
        with self._lock:
            per_address = self._by_address.get(address, 0)
            if self._count >= self.max_waits or (
                    self.max_waits_per_address and per_address >= self.max_waits_per_address):
                raise Busy()
            self._count += 1
            self._by_address[address] = per_address + 1
            for mailbox in watch.mailboxes:
                self._by_mailbox.setdefault(mailbox, set()).add(watch)
        if self.closed:
            watch.wake()
        return watch

    def unwatch(self, watch: Watch) -> None:
        with self._lock:
            self._count -= 1
            left = self._by_address[watch.address] - 1
            if left:
                self._by_address[watch.address] = left
            else:
                del self._by_address[watch.address]
            for mailbox in watch.mailboxes:
                watches = self._by_mailbox.get(mailbox)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._by_mailbox[mailbox]

    def notify(self, mailbox: str) -> None:
        with self._lock:
            watches = list(self._by_mailbox.get(mailbox, ()))
        for watch in watches:
            watch.wake()

    def notify_all(self) -> None:
        with self._lock:
            watches = {w for ws in self._by_mailbox.values() for w in ws}
        for watch in watches:
            watch.wake()

    def waiting(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        """Wake everyone; later watches return at once."""
        self.closed = True
        self.notify_all()
