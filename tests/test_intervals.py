"""IntervalSet (device/intervals.py), its SQL twin in PadStore, and the store schema."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from device.errors import StoreError
from device.intervals import IntervalSet
from device.storage import schema
from device.storage.padstore import PadStore

UNIVERSE = 200
points = st.integers(0, UNIVERSE)


def runs(model: set[int]) -> list[tuple[int, int]]:
    """The maximal half-open runs of a set of integers, sorted."""
    out: list[tuple[int, int]] = []
    for x in sorted(model):
        if out and out[-1][1] == x:
            out[-1] = (out[-1][0], x + 1)
        else:
            out.append((x, x + 1))
    return out


def assert_canonical(intervals: list[tuple[int, int]]) -> None:
    """Sorted, non-empty, disjoint and merged (no two members touch)."""
    for start, end in intervals:
        assert start < end, intervals
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert end < start, intervals


# -- IntervalSet against a set of integers ---------------------------------------------------


class IntervalSetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.intervals = IntervalSet()
        self.model: set[int] = set()

    @rule(start=points, end=points)
    def add(self, start: int, end: int) -> None:
        self.intervals.add(start, end)
        self.model.update(range(start, end))  # empty when start >= end: a no-op

    @rule(start=points, length=st.integers(1, 12))
    def add_short(self, start: int, length: int) -> None:
        self.add(start, start + length)

    @precondition(lambda self: len(self.intervals) > 0)
    @rule(data=st.data())
    def add_touching(self, data: st.DataObject) -> None:
        """Add a range that ends where a member starts or starts where one ends."""
        start, end = data.draw(st.sampled_from(list(self.intervals)))
        if data.draw(st.booleans()):
            self.add(end, end + data.draw(st.integers(1, 5)))
        else:
            self.add(max(start - data.draw(st.integers(1, 5)), 0), start)

    @rule(start=points, end=points)
    def overlaps(self, start: int, end: int) -> None:
        expected = any(x in self.model for x in range(start, end))
        assert self.intervals.overlaps(start, end) == expected

    @rule(start=points, end=points)
    def covered(self, start: int, end: int) -> None:
        expected = sum(1 for x in range(start, end) if x in self.model)
        assert self.intervals.covered(start, end) == expected

    @rule()
    def total(self) -> None:
        assert self.intervals.total() == len(self.model)

    @invariant()
    def canonical(self) -> None:
        members = list(self.intervals)
        assert_canonical(members)
        assert members == runs(self.model)
        assert len(self.intervals) == len(members)

    @invariant()
    def rebuilds(self) -> None:
        assert list(IntervalSet(list(self.intervals))) == list(self.intervals)


IntervalSetMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestIntervalSet = IntervalSetMachine.TestCase


def test_intervalset_examples() -> None:
    s = IntervalSet([(10, 20), (30, 40)])
    assert list(s) == [(10, 20), (30, 40)]
    assert not s.overlaps(20, 30) and not s.overlaps(0, 10) and not s.overlaps(40, 50)
    assert s.overlaps(19, 20) and s.overlaps(39, 41) and s.overlaps(0, 100)
    assert not s.overlaps(15, 15) and not s.overlaps(15, 12)
    assert s.covered(0, 100) == 20 and s.covered(15, 35) == 10 and s.covered(20, 30) == 0
    s.add(20, 30)  # touches both neighbours: one member
    assert list(s) == [(10, 40)]
    s.add(5, 5)
    assert list(s) == [(10, 40)] and s.total() == 30
    assert repr(s) == "IntervalSet([(10, 40)])"


def test_intervalset_large_offsets() -> None:
    top = (1 << 64) - 1
    s = IntervalSet([(top - 100, top), (0, 32)])
    assert list(s) == [(0, 32), (top - 100, top)]
    assert s.overlaps(top - 1, top) and not s.overlaps(32, top - 100)
    assert s.total() == 132


# -- the SQL twin in PadStore ------------------------------------------------------------------


PAD_A = hashlib.shake_256(b"test_intervals pad A").digest(16)
PAD_B = hashlib.shake_256(b"test_intervals pad B").digest(16)


def fresh_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.upgrade(conn)
    return conn


def stored(conn: sqlite3.Connection, pad_id: bytes) -> list[tuple[int, int]]:
    rows = conn.execute('SELECT start, "end" FROM consumed WHERE pad_id = ? ORDER BY start', (pad_id,)).fetchall()
    return [(int(s), int(e)) for s, e in rows]


class ConsumedMachine(RuleBasedStateMachine):
    """PadStore.add_consumed / overlaps (one indexed lookup) against IntervalSet."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = fresh_db()
        self.models = {PAD_A: IntervalSet(), PAD_B: IntervalSet()}

    def teardown(self) -> None:
        self.conn.close()

    @initialize(scale=st.sampled_from([1, 1 << 40]))
    def choose_scale(self, scale: int) -> None:
        """Also run with offsets far beyond 32 bits (pads are addressed with u64)."""
        self.scale = scale

    def _add(self, pad_id: bytes, start: int, end: int) -> None:
        start, end = start * self.scale, end * self.scale
        model = self.models[pad_id]
        if start >= end or model.overlaps(start, end):
            return  # add_consumed requires a non-empty range disjoint from the set
        assert not PadStore.overlaps(self.conn, pad_id, start, end)
        self.conn.execute("BEGIN")
        PadStore.add_consumed(self.conn, pad_id, start, end)
        self.conn.execute("COMMIT")
        model.add(start, end)

    @rule(pad=st.sampled_from([PAD_A, PAD_B]), start=points, length=st.integers(1, 20))
    def add(self, pad: bytes, start: int, length: int) -> None:
        self._add(pad, start, start + length)

    @precondition(lambda self: any(len(m) for m in self.models.values()))
    @rule(data=st.data())
    def add_touching(self, data: st.DataObject) -> None:
        """Fill right up to a member's edge (or bridge a gap) so merging is exercised."""
        pad = data.draw(st.sampled_from([p for p, m in self.models.items() if len(m)]))
        members = [(s // self.scale, e // self.scale) for s, e in self.models[pad]]
        i = data.draw(st.integers(0, len(members) - 1))
        start, end = members[i]
        side = data.draw(st.sampled_from(["right", "left", "bridge"]))
        if side == "right":
            self._add(pad, end, end + data.draw(st.integers(1, 5)))
        elif side == "left" and start > 0:
            self._add(pad, max(start - data.draw(st.integers(1, 5)), 0), start)
        elif side == "bridge" and i + 1 < len(members):
            self._add(pad, end, members[i + 1][0])

    @rule(pad=st.sampled_from([PAD_A, PAD_B]), start=points, length=st.integers(1, 40))
    def query(self, pad: bytes, start: int, length: int) -> None:
        start, end = start * self.scale, (start + length) * self.scale
        assert PadStore.overlaps(self.conn, pad, start, end) == self.models[pad].overlaps(start, end)

    @rule(pad=st.sampled_from([PAD_A, PAD_B]), start=points, length=st.integers(1, 3))
    def query_fine(self, pad: bytes, start: int, length: int) -> None:
        """Queries one unit wide at the edges of members (scale > 1: inside a unit)."""
        start = start * self.scale - 1 if start else 0
        end = start + length
        assert PadStore.overlaps(self.conn, pad, start, end) == self.models[pad].overlaps(start, end)

    @invariant()
    def same_rows(self) -> None:
        for pad, model in self.models.items():
            rows = stored(self.conn, pad)
            assert rows == list(model)
            assert_canonical(rows)
        total = self.conn.execute("SELECT count(*) FROM consumed").fetchone()[0]
        assert total == sum(len(m) for m in self.models.values())


ConsumedMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestConsumed = ConsumedMachine.TestCase


def test_consumed_sets_do_not_mix() -> None:
    conn = fresh_db()
    try:
        PadStore.add_consumed(conn, PAD_A, 0, 64)
        PadStore.add_consumed(conn, PAD_B, 100, 164)
        PadStore.add_consumed(conn, PAD_A, 64, 100)  # touches PAD_A's member only
        PadStore.add_consumed(conn, PAD_B, 64, 100)  # touches PAD_B's member only
        assert stored(conn, PAD_A) == [(0, 100)]
        assert stored(conn, PAD_B) == [(64, 164)]
        assert PadStore.overlaps(conn, PAD_A, 99, 200) and not PadStore.overlaps(conn, PAD_A, 100, 200)
        assert PadStore.overlaps(conn, PAD_B, 0, 65) and not PadStore.overlaps(conn, PAD_B, 0, 64)
        other = bytes(16)
        assert not PadStore.overlaps(conn, other, 0, 1 << 62)
        assert stored(conn, other) == []
    finally:
        conn.close()


def test_consumed_merges_both_sides() -> None:
    conn = fresh_db()
    try:
        PadStore.add_consumed(conn, PAD_A, 0, 32)
        PadStore.add_consumed(conn, PAD_A, 64, 96)
        PadStore.add_consumed(conn, PAD_A, 128, 160)
        assert stored(conn, PAD_A) == [(0, 32), (64, 96), (128, 160)]
        PadStore.add_consumed(conn, PAD_A, 32, 64)
        assert stored(conn, PAD_A) == [(0, 96), (128, 160)]
        PadStore.add_consumed(conn, PAD_A, 100, 128)
        assert stored(conn, PAD_A) == [(0, 96), (100, 160)]
        PadStore.add_consumed(conn, PAD_A, 96, 100)
        assert stored(conn, PAD_A) == [(0, 160)]
    finally:
        conn.close()


# -- schema ----------------------------------------------------------------------------------


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(":memory:", isolation_level=None)
    yield c
    c.close()


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_schema_upgrade_fresh(conn: sqlite3.Connection) -> None:
    assert schema.LATEST == len(schema.STEPS) >= 1
    assert schema.version(conn) == 0
    assert schema.upgrade(conn) == 0
    assert schema.version(conn) == schema.LATEST
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    assert {"device", "contacts", "pads", "consumed", "pending_wipe", "events"} <= tables(conn)
    assert not conn.in_transaction


def test_schema_upgrade_twice_is_a_no_op(conn: sqlite3.Connection) -> None:
    schema.upgrade(conn)
    before = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    assert schema.upgrade(conn) == schema.LATEST
    assert schema.upgrade(conn) == schema.LATEST
    assert conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == before
    assert schema.version(conn) == schema.LATEST


def test_schema_refuses_a_newer_database(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    with pytest.raises(StoreError):
        schema.upgrade(conn)
    assert schema.version(conn) == schema.LATEST + 1  # left as it was
    assert tables(conn) == set()
    assert not conn.in_transaction


def test_schema_upgrade_on_file_survives_reopen(tmp_path) -> None:
    path = tmp_path / "store.db"
    first = sqlite3.connect(path, isolation_level=None)
    try:
        assert schema.upgrade(first) == 0
    finally:
        first.close()
    second = sqlite3.connect(path, isolation_level=None)
    try:
        assert schema.upgrade(second) == schema.LATEST
        assert "consumed" in tables(second)
    finally:
        second.close()


def test_merging_finds_the_left_neighbour_by_the_primary_key(tmp_path):
    """add_consumed's lookups use the (pad_id, start) index, never a scan of every range (issue 21)."""
    from device.storage.padstore import PadStore

    PadStore.init(tmp_path / "a", "alice").close()
    with PadStore(tmp_path / "a") as store, store._transaction() as conn:
        pad_id = bytes(16)
        for i in range(50):
            store.add_consumed(conn, pad_id, 10 * i, 10 * i + 5)  # 50 ranges with gaps
        plans = []
        original = conn.execute

        def spy(sql, *args):
            if sql.lstrip().upper().startswith("SELECT") and "consumed" in sql:
                plans.extend(row[-1] for row in original("EXPLAIN QUERY PLAN " + sql, *args).fetchall())
            return original(sql, *args)

        proxy = type("Spy", (), {"execute": staticmethod(spy)})()
        store.add_consumed(proxy, pad_id, 495, 500)  # touches the last range: a merge
        store.add_consumed(proxy, pad_id, 1000, 1005)  # touches nothing
        # Each lookup is bounded by start as well as pad_id: a lookup by pad_id alone reads every range.
        assert plans and all("USING PRIMARY KEY (pad_id=? AND start" in p for p in plans), plans
        ranges = conn.execute('SELECT start, "end" FROM consumed ORDER BY start').fetchall()
        assert ranges[-2:] == [(490, 500), (1000, 1005)]
