"""The device store's layers (issue 20): SQL on the device's tables is written only in ``device/storage/``.

The rules of pad use live in the pad store (device/storage/padstore.py); the other features keep their tables
through modules of ``device/storage/`` too. So no module outside that package may

* hold an SQL statement naming a table of the pad store (pads, their used ranges, receive state, contacts,
  events, ...) -- anywhere in the code -- or, on the device's side, one naming any table of ``device.db``;
* run SQL (``execute``) on the device's side;
* reach into a PadStore for a connection or a transaction (``store.transaction()``, ``store.read(sql)``,
  ``store._conn()``, ...).

Read from the source with ``ast``: nothing is imported or run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from device.storage import schema
from device.storage.padstore import PadStore

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("device", "provisioning", "client", "relay", "hrng", "onetimechat")
DEVICE_SIDE = ("device", "provisioning", "onetimechat")  # the packages that open a device store (the CLI too)
STORAGE = ROOT / "device" / "storage"

# The pad store's own tables: the pads, their used ranges and pending wipes, tag failures, contacts, the event
# log and the device's identity.
PAD_TABLES = frozenset({"device", "contacts", "pads", "consumed", "pending_wipe", "tag_failures", "events"})
DEVICE_TABLES = frozenset(re.findall(r"CREATE TABLE (\w+)", "".join(schema.STEPS)))
SQL_VERB = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|REPLACE)\b")
# Where a table's name stands in a statement.
TABLE_REF = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+"?(\w+)', re.IGNORECASE)
# What a PadStore keeps to itself: its connections and transactions.
STORE_PRIVATE = frozenset({"transaction", "read", "_transaction", "_read", "_conn", "_conns", "_local", "conn",
                           "_log", "_set_setting"})
# The store's private names, which no code outside device/storage/ reads on anything but its own ``self``
# (whatever the variable is called: ``s = self.store; s._transaction()``), nor by ``getattr(x, "_conn")``.
STORE_ONLY = frozenset(name for name in STORE_PRIVATE if name.startswith("_"))


def _modules() -> list[Path]:
    found = []
    for package in PACKAGES:
        found += sorted((ROOT / package).rglob("*.py"))
    return [p for p in found if STORAGE not in p.parents]


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant, f-strings' literal parts joined (an f-string's table name is in its text)."""
    out = []
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            out.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            out.append((node.lineno, node.value))
    return out


def sql_on_tables(tree: ast.AST, tables: frozenset[str]) -> list[str]:
    """The SQL statements in ``tree`` that name one of ``tables``."""
    hits = []
    for line, text in _strings(tree):
        if not SQL_VERB.search(text):
            continue
        named = {t.lower() for t in TABLE_REF.findall(text)} & tables
        if named:
            hits.append(f"line {line}: SQL on {', '.join(sorted(named))}: {text.strip()[:80]!r}")
    return hits


def _store_like(node: ast.expr) -> bool:
    """Whether an expression reads as a pad store: ``store``, ``self.store``, ``a.store``, ``PadStore(...)``."""
    if isinstance(node, ast.Call):
        node = node.func
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name.lower().endswith("store") and name != "MailStore"


def store_reach(tree: ast.AST) -> list[str]:
    """Calls and attribute reads that take a PadStore's connection or transaction."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (
                (node.attr in STORE_PRIVATE and _store_like(node.value))
                or (node.attr in STORE_ONLY and not (isinstance(node.value, ast.Name)
                                                      and node.value.id in ("self", "cls")))):
            hits.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value in STORE_PRIVATE):
            hits.append(f"line {node.lineno}: {ast.unparse(node)}")
    return hits


def sql_runs(tree: ast.AST) -> list[str]:
    """Calls of ``execute``/``executemany``/``executescript`` (the device side has no database of its own)."""
    return [f"line {node.lineno}: {ast.unparse(node.func)}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("execute", "executemany", "executescript")]


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _report(found: dict[str, list[str]]) -> str:
    return "\n".join(f"{name}: {hit}" for name, hits in sorted(found.items()) for hit in hits)


def test_the_tables_are_known() -> None:
    assert PAD_TABLES <= DEVICE_TABLES
    assert {"clients", "settings", "abe_keys", "abe_pads"} <= DEVICE_TABLES


def test_no_sql_on_the_pad_tables_outside_the_store() -> None:
    """The pad rules' SQL is the pad store's alone: no module outside device/storage/ names a pad table."""
    found = {}
    for path in _modules():
        hits = sql_on_tables(_parse(path), PAD_TABLES)
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert not found, "SQL on the pad tables outside device/storage/:\n" + _report(found)


def test_no_sql_on_the_device_store_outside_storage() -> None:
    """On the device's side, no module outside device/storage/ runs SQL or names a table of device.db (the
    attribute keys', the rooms', the laptops' tables are kept by modules of device/storage/ too)."""
    found = {}
    for path in _modules():
        if path.relative_to(ROOT).parts[0] not in DEVICE_SIDE:
            continue
        tree = _parse(path)
        hits = sql_on_tables(tree, DEVICE_TABLES) + sql_runs(tree)
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert not found, "SQL on device.db outside device/storage/:\n" + _report(found)


def test_no_connection_leaves_the_store() -> None:
    """Nothing outside device/storage/ takes a PadStore's transaction, raw reads or connection."""
    found = {}
    for path in _modules():
        hits = store_reach(_parse(path))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert not found, "A PadStore's connection reached from outside device/storage/:\n" + _report(found)


def test_the_store_offers_no_public_connection() -> None:
    """PadStore's connection and transactions are private: its API is named operations."""
    for name in ("transaction", "read", "conn", "execute"):
        assert not hasattr(PadStore, name), f"PadStore.{name} is public"
    for name in ("reserve", "send", "receive", "wipe", "flush_refusals", "contacts", "events", "pads",
                 "confirm_pad", "remove_unused_pad", "add_pad", "save_settings", "contact_device"):
        assert callable(getattr(PadStore, name)), name


@pytest.mark.parametrize(("source", "caught"), [
    ('with self.store.transaction() as conn:\n    conn.execute("UPDATE pads SET send_next = 1")\n', 3),
    ('rows = store.read("SELECT name FROM contacts")\n', 2),
    ('x = store._conn()\n', 1),
    ('q = f"SELECT count(*) FROM events WHERE event IN ({marks})"\n', 1),
    ('s = "DELETE FROM consumed WHERE pad_id = ?"\n', 1),
    ('data = sys.stdin.buffer.read()\nhello = "select your contacts"\n', 0),
    # Whatever the store is called, and by name.
    ('s = self.store\nwith s._transaction() as c:\n    pass\n', 1),
    ('getattr(keeper, "_conn")()\n', 1),
    ('self._read(path)\n', 0),
])
def test_the_checks_catch(source: str, caught: int) -> None:
    """The checks themselves: what they catch and what they leave alone."""
    tree = ast.parse(source)
    assert len(sql_on_tables(tree, PAD_TABLES)) + len(store_reach(tree)) + len(sql_runs(tree)) == caught
