"""Two processes writing lock.json at once (issue 19, an outside review of the PIN lock).

The device server and an `otc device` command each hold a StoreLock on the same home. Each unlock rewrites
lock.json (its counters; a re-wrap at today's scrypt cost), as do a PIN change and a wipe. Before, only
threads of one StoreLock were serialised and every writer used one temporary name: a concurrent unlock
crashed or left lock.json unreadable, a confirmed PIN change was silently undone, and a wipe could be
undone by an unlock that had begun before it. Two StoreLock objects stand for two processes here; scrypt's
second on a Pi is modelled by a pause inside the slower side's derivation.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import device.storage.lock as lock_module
from device.storage.lock import StoreLock
from device.storage.padstore import PadStore
from device.ui import LockState

OLD, NEW = "246810", "97531864"


def opens_with(home, pin: str) -> bool:
    record = json.loads((home / "lock.json").read_text())
    try:
        kek = lock_module._derive(pin, base64.b64decode(record["salt"]), record["kdf"])  # noqa: SLF001
        wrapped = base64.b64decode(record["wrapped"])
        lock_module.AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], lock_module.WRAP_AAD)
        return True
    except Exception:  # noqa: BLE001 - any failure means it does not open
        return False


def slow_in(thread_name: str, monkeypatch, pause: float = 0.5) -> None:
    real = lock_module._derive  # noqa: SLF001

    def derive(pin, salt, params):
        if threading.current_thread().name == thread_name:
            time.sleep(pause)
        return real(pin, salt, params)

    monkeypatch.setattr(lock_module, "_derive", derive)


def test_a_pin_change_is_not_undone_by_another_process_unlocking_meanwhile(tmp_path, monkeypatch):
    home = tmp_path / "home"
    PadStore.init(home, "racing", pin=OLD).close()
    slow_in("server", monkeypatch)
    # The server's software wraps at a higher cost than the record's: its unlock re-wraps under the old PIN.
    server = StoreLock(home, kdf_params={"n": 1 << 11, "r": 8, "p": 1})
    results: dict = {}
    thread = threading.Thread(target=lambda: results.setdefault("server", server.unlock(OLD)), name="server")
    thread.start()
    time.sleep(0.1)
    changed = StoreLock(home).change_pin(OLD, NEW)  # `otc device pin`, at the same time
    thread.join(30)
    assert changed.ok and results["server"].ok
    assert opens_with(home, NEW) and not opens_with(home, OLD)


def test_a_wrong_pin_elsewhere_does_not_undo_a_pin_change(tmp_path, monkeypatch):
    home = tmp_path / "home"
    PadStore.init(home, "racing", pin=OLD).close()
    slow_in("other", monkeypatch)
    thread = threading.Thread(target=lambda: StoreLock(home).unlock("000000"), name="other")
    thread.start()
    time.sleep(0.1)
    changed = StoreLock(home).change_pin(OLD, NEW)
    thread.join(30)
    # One runs whole, then the other: the wrong PIN first makes the change wait out its delay (and change
    # nothing); the change first is kept, and the wrong PIN counts against the new record.
    assert opens_with(home, NEW) if changed.ok else (opens_with(home, OLD) and "Wait" in changed.message)


def test_unlocks_from_many_processes_at_once_never_crash_nor_spoil_the_lock_file(tmp_path):
    home = tmp_path / "home"
    PadStore.init(home, "racing", pin=OLD).close()
    errors: list[BaseException] = []
    results: list[bool] = []

    def unlock(pin: str) -> None:
        try:
            results.append(StoreLock(home).unlock(pin).ok)
        except BaseException as exc:  # noqa: BLE001 - the test collects them
            errors.append(exc)

    threads = [threading.Thread(target=unlock, args=(OLD,)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert results == [True] * 10
    json.loads((home / "lock.json").read_text())  # still a valid record
    assert not list(home.glob("lock.json*.tmp"))
    assert StoreLock(home).unlock(OLD).ok


def test_an_unlock_begun_before_a_wipe_does_not_bring_the_wrapped_key_back(tmp_path, monkeypatch):
    home = tmp_path / "home"
    PadStore.init(home, "racing", pin=OLD).close()
    record = json.loads((home / "lock.json").read_text())
    record["failures"] = 9  # one wrong PIN from the wipe
    (home / "lock.json").write_text(json.dumps(record))
    wrapped = base64.b64decode(record["wrapped"])
    slow_in("owner", monkeypatch)
    results: dict = {}
    owner = threading.Thread(target=lambda: results.setdefault("owner", StoreLock(home).unlock(OLD)), name="owner")
    owner.start()
    time.sleep(0.1)
    results["thief"] = StoreLock(home).unlock("000000")  # the tenth wrong PIN, while the owner's runs
    owner.join(30)
    state = StoreLock(home).status().state
    if state == LockState.WIPED:  # the wrong PIN came first: nothing of the key may come back
        assert not (home / "lock.json").exists()
        for path in home.rglob("*"):
            if path.is_file():
                assert wrapped[:8] not in path.read_bytes(), path
    else:  # the owner's right PIN came first: it reset the count, and the wrong one counted once
        assert results["owner"].ok and json.loads((home / "lock.json").read_text())["failures"] == 1
