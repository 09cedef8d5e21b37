"""Acknowledgements by cursor, merged (issue 21).

A long poll with ``"ack": true`` says the reader holds everything up to its
cursors; the relay may delete it. Before, each such poll ran its deletion as a
write transaction of its own and waited for it to be synced before it looked
for new messages: under load half of the relay's writes were these, each
deleting one or two messages, and the writer's turn (one at a time, across
worker processes) was the relay's bottleneck.

Now a poll's cursors are noted here and the poll goes on at once; every
``ACK_DELAY_S`` the noted cursors, the highest per mailbox, are deleted in one
write (one statement per mailbox, the counters taken off once), which joins
whatever group commit is running. Nothing a client sees changes but timing:

* a poll never returns what it acknowledged (its cursor is past it), so the
  reader sees nothing of the delay;
* a send refused because its mailbox or its address is full runs the
  deletions noted so far first and is tried once more, so a refusal never
  comes from an acknowledgement still waiting here;
* ``POST /v1/ack`` still deletes before it answers (its answer counts what
  went);
* a crash forgets the cursors noted in the last ``ACK_DELAY_S``: those
  messages stay stored until the reader's next poll acknowledges again (each
  poll acknowledges everything up to its cursor) or they expire. A reader that
  fetched them already never gets them again by cursor; one that lost its
  cursor gets them again as if it had not acknowledged, and the device refuses
  a replay (the pad rule), as for any message a relay repeats.

What is noted is bounded: from ``MAX_PENDING`` mailboxes on, the thread
applies them at once instead of waiting; and a poll that finds
``HARD_PENDING_FACTOR`` times that noted (a flood faster than the thread)
applies them itself before it is answered, as every poll did before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from relay.errors import RelayError
from relay.storage import Store

log = logging.getLogger("otc.relay")

ACK_DELAY_S = 0.1
MAX_PENDING = 4096
HARD_PENDING_FACTOR = 4


class MergedAcks:
    """Cursors acknowledged by polls, deleted together every ``delay`` seconds by a thread of their own."""

    def __init__(self, store: Store, clock: Callable[[], float],
                 counted: Callable[[int, str | None, int], None], delay: float = ACK_DELAY_S) -> None:
        self._store, self._clock, self._counted, self._delay = store, clock, counted, delay
        # mailbox -> [highest cursor, the address that sent it, how many polls from that address acknowledged it]
        self._pending: dict[str, list] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one deletion at a time: a flush returns once what it took is gone
        self._noted = threading.Event()
        self._hurry = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="otc-relay-acks", daemon=True)
        self._thread.start()

    def note(self, cursors: Sequence[tuple[str, int]], remote: str | None) -> None:
        """The reader at ``remote`` holds every message up to each cursor: delete them soon. Returns at once."""
        with self._lock:
            for mailbox, through in cursors:
                if through <= 0:
                    continue
                entry = self._pending.get(mailbox)
                if entry is None:
                    self._pending[mailbox] = [through, remote, 1]
                elif through > entry[0]:
                    entry[:] = [through, remote, 1 if remote != entry[1] else entry[2] + 1]
            noted = len(self._pending)
        self._noted.set()
        if noted >= MAX_PENDING:
            self._hurry.set()
        if noted >= HARD_PENDING_FACTOR * MAX_PENDING:
            self.flush()  # the poll waits, as it did before notes were merged

    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def flush(self) -> bool:
        """Delete what is noted now, in one write; whether anything was noted. Raises the store's error."""
        with self._flushing:
            with self._lock:
                taken, self._pending = self._pending, {}
            if not taken:
                return False
            cursors = sorted((mailbox, entry[0]) for mailbox, entry in taken.items())
            deleted = self._store.ack_each(cursors, self._clock())
            for mailbox, count in deleted.items():
                _, remote, polls = taken[mailbox]
                self._counted(count, remote, polls)
            return True

    def _loop(self) -> None:
        while True:
            self._noted.wait()
            if self._closed:
                return
            self._hurry.wait(self._delay)  # what other polls note meanwhile joins this deletion
            self._hurry.clear()
            self._noted.clear()  # before taking: a note made during the flush is seen next time round
            if self._closed:
                return
            try:
                self.flush()
            except RelayError as exc:  # the store is unavailable: the readers' next polls acknowledge again
                log.warning("acknowledgements not applied: %s", exc.code)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive one failed write
                log.error("acknowledgements failed: %s", type(exc).__name__)

    def close(self) -> None:
        """Stop the thread; delete what is noted (best effort: the store may be gone)."""
        self._closed = True
        self._noted.set()
        self._hurry.set()
        self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - closing: the readers acknowledge again next time
            log.warning("acknowledgements not applied at close: %s", type(exc).__name__)
