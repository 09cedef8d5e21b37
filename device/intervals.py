"""Sets of half-open integer intervals, kept merged and sorted.

The pad store keeps each pad's consumed segments this way (in SQLite, with
the same algorithm as :class:`IntervalSet`): because the intervals are
disjoint and sorted, the only one that can overlap ``[start, end)`` is the
last one starting before ``end``, so an overlap check is one ordered lookup.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class IntervalSet:
    """Disjoint, merged half-open intervals ``[start, end)``."""

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in intervals:
            self.add(start, end)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends))

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"IntervalSet({list(self)!r})"

    def total(self) -> int:
        """How many integers the set covers."""
        return sum(e - s for s, e in self)

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any member intersects ``[start, end)``."""
        if start >= end:
            return False
        i = bisect.bisect_left(self._starts, end) - 1
        return i >= 0 and self._ends[i] > start

    def covered(self, start: int, end: int) -> int:
        """How many integers of ``[start, end)`` the set covers."""
        total = 0
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while i < len(self._starts) and self._starts[i] < end:
            lo, hi = max(self._starts[i], start), min(self._ends[i], end)
            if hi > lo:
                total += hi - lo
            i += 1
        return total

    def add(self, start: int, end: int) -> None:
        """Add ``[start, end)``, merging with members it touches or overlaps."""
        if start >= end:
            return
        lo = bisect.bisect_left(self._ends, start)  # first member ending at/after start
        hi = bisect.bisect_right(self._starts, end)  # members starting at/before end
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]
