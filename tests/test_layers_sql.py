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
# Packages the import contracts keep from the device store: files they handle are the laptop's or the relay's.
LAPTOP_AND_RELAY = ("client", "relay")

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


# -- the pad store's files (issue 20, an outside review): their layout and lifecycle are the store's too ----------
#
# The pads folder's layout (``HOME/pads``, the names the store gives a pad's files: opaque in a PIN-locked home)
# and every step of a pad file's life (made, written, listed, swept, discarded, moved into place as a pad) belong
# to device/storage/ (PadStore and its Partials). So outside it no module may
#
# * read a store's ``home`` (``store.home``, ``self.store.home``), or build a path with the pads folder
#   (``... / "pads"``, ``... / PADS_DIR``);
# * ask the store where a file lies (``pad_path``, ``data_path``, ``state_path``) or import its layout's names
#   (``PADS_DIR``, ``PAD_SUFFIX``, ``PARTIAL_SUFFIX``, ``PARTIAL_STATE_SUFFIX``);
# * glob, unlink, rename, replace, truncate, touch or write a file reached from a store (directly, or through a
#   name bound to such a path or to a descriptor the store handed out).

LAYOUT_NAMES = frozenset({"PADS_DIR", "PAD_SUFFIX", "PARTIAL_SUFFIX", "PARTIAL_STATE_SUFFIX"})
LAYOUT_CALLS = frozenset({"pad_path", "data_path", "state_path"})
OS_FILE_CALLS = frozenset({"replace", "rename", "renames", "unlink", "remove", "ftruncate", "truncate", "link",
                           "symlink", "open", "listdir", "scandir"})
SHUTIL_FILE_CALLS = frozenset({"move", "rmtree", "copy", "copyfile", "copy2", "disk_usage"})
PATH_FILE_METHODS = frozenset({"glob", "rglob", "iterdir", "unlink", "rename", "replace", "truncate", "touch",
                               "write_bytes", "write_text", "rmdir", "mkdir"})


def _reaches_files(node: ast.AST, tainted: set[str]) -> bool:
    """Whether an expression reaches the store's files: a store, a path the store gave, or a name bound to one."""
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Name, ast.Attribute)) and _store_like(sub):
            return True
        if isinstance(sub, ast.Name) and sub.id in tainted:
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in LAYOUT_CALLS:
            return True
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Div) and _pads_folder(sub.right):
            return True
    return False


def _pads_folder(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and node.value == "pads") or \
        (isinstance(node, ast.Name) and node.id == "PADS_DIR")


def _tainted_names(tree: ast.AST) -> set[str]:
    """Names bound (anywhere in the module) to something that reaches the store's files, to a fixpoint."""
    tainted: set[str] = set()
    while True:
        before = len(tainted)
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            value: ast.AST | None = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
                targets, value = [node.target], node.value
            elif isinstance(node, (ast.For, ast.comprehension)):
                targets, value = [node.target], node.iter
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                targets, value = [node.optional_vars], node.context_expr
            if value is None or not _reaches_files(value, tainted):
                continue
            for target in targets:
                tainted |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        if len(tainted) == before:
            return tainted


def store_files(tree: ast.AST) -> list[str]:
    """Where a module outside device/storage/ handles the store's files itself."""
    hits = []
    tainted = _tainted_names(tree)
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', 0)}: "
        if isinstance(node, ast.Attribute) and node.attr == "home" and _store_like(node.value):
            hits.append(where + ast.unparse(node))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _pads_folder(node.right):
            hits.append(where + ast.unparse(node))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("device.storage"):
            hits += [where + f"imports {a.name}" for a in node.names if a.name in LAYOUT_NAMES]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if func.attr in LAYOUT_CALLS:
                hits.append(where + ast.unparse(node))
            elif (owner == "os" and func.attr in OS_FILE_CALLS) or (owner == "shutil" and
                                                                     func.attr in SHUTIL_FILE_CALLS):
                if any(_reaches_files(arg, tainted) for arg in [*node.args, *(k.value for k in node.keywords)]):
                    hits.append(where + ast.unparse(node))
            elif owner not in ("os", "shutil") and func.attr in PATH_FILE_METHODS and \
                    _reaches_files(func.value, tainted):
                hits.append(where + ast.unparse(node))
    return hits


def test_no_module_outside_the_store_handles_its_files() -> None:
    """The pad-file lifecycle is the store's: nothing outside device/storage/ builds, lists, truncates, moves or
    deletes a store's files (provisioning makes its pads through ``store.partials``)."""
    found = {}
    for path in _modules():
        if path.relative_to(ROOT).parts[0] in LAPTOP_AND_RELAY:
            continue  # they cannot reach a pad store (.importlinter); their ``store`` is their own (MailStore)
        hits = store_files(_parse(path))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert not found, "The store's files handled outside device/storage/:\n" + _report(found)


@pytest.mark.parametrize(("source", "caught"), [
    ('for p in (store.home / "pads").glob("*.ceremony.json"):\n    p.unlink()\n', 4),  # home, /pads, glob, unlink
    ('final = self.store.pad_path(pad_id)\nos.replace(tmp, final)\n', 2),
    ('fd = os.open(Partial.data_path(store, pid), os.O_RDWR)\nos.ftruncate(fd, size)\n', 3),
    ('a.pad_path(pad_id).unlink(missing_ok=True)\n', 2),
    ('free = shutil.disk_usage(self.store.home).free\n', 2),
    ('from device.storage.padstore import PARTIAL_SUFFIX, PadStore\n', 1),
    ('pads = home / PADS_DIR\nfor p in pads.iterdir():\n    p.unlink()\n', 3),
    # What the store hands out may be written through, and other files are the module's own business.
    ('fd = self.store.partials.begin(pad_id, size, record)\nos.pwrite(fd, chunk, 0)\nos.close(fd)\n', 0),
    ('os.replace(tmp, self.home / PAIRING_CODE_FILE)\n(self.home / "x").unlink()\n', 0),
    ('text = name.replace("_", "-")\nfor p in (state.home / "devices").glob("*.json"):\n    p.read_text()\n', 0),
])
def test_the_file_checks_catch(source: str, caught: int) -> None:
    assert len(store_files(ast.parse(source))) == caught, store_files(ast.parse(source))
