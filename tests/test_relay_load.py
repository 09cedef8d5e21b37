"""Load through a crash: 50 clients for 30 s, the relay SIGKILLed and restarted midway.

Each client has a mailbox and sends to the next client's (a ring), with one
thread sending and one long-polling its own mailbox and acknowledging what it
read. A sender retries a failed send with the same idempotency key until it
gets a ref. Afterwards: every message that got a ref was received exactly
once by its reader, with that ref and its contents, and nothing else was.
Bounded: 30 s of load and at most 60 s more to drain, on loopback.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import threading
import time
from collections import Counter, defaultdict

import pytest

from tests.relay_fixtures import (  # noqa: F401 - fixtures
    BACKENDS,
    RawClient,
    RelayProcess,
    fresh_db,
    postgres_fixture,
)

CLIENTS = 50
LOAD_S = 30.0
DRAIN_S = 60.0
RETRY_S = 0.05


def contents(client: int, seq: int) -> str:
    pad = hashlib.sha256(f"{client}/{seq}".encode()).hexdigest()
    return f"{client}:{seq}:{pad}"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_fifty_clients_lose_and_duplicate_nothing_through_a_sigkill(backend, request, tmp_path):
    db = fresh_db(request, backend, tmp_path)
    relay = RelayProcess(db, "--rate-limit", "0", "--waits-per-address", "0", "--threads", "160",
                         log=tmp_path / "relay.log").start()
    port = relay.port
    mailboxes = [f"load-{secrets.token_hex(8)}-{n}" for n in range(CLIENTS)]
    lock = threading.Lock()
    confirmed: dict[tuple[str, int], str] = {}  # (mailbox, ref) -> contents
    attempted: set[str] = set()
    received: dict[str, list[tuple[int, str]]] = defaultdict(list)
    stats: Counter = Counter()
    sending = threading.Event()
    sending.set()
    drain_until = [0.0]

    def sender(n: int) -> None:
        client = RawClient("127.0.0.1", port, timeout=30)
        target = mailboxes[(n + 1) % CLIENTS]
        seq = 0
        try:
            while sending.is_set():
                text = contents(n, seq)
                with lock:
                    attempted.add(text)
                body = {"mailbox": target, "contents": text, "id": f"{n}-{seq}", "sender": str(n)}
                # Once tried, a message is retried until it has a ref (bounded by the drain time).
                while time.monotonic() < drain_until[0] or sending.is_set():
                    try:
                        status, answer = client.post("/v1/send", body)
                    except (OSError, http.client.HTTPException):
                        with lock:
                            stats["send failures (relay down)"] += 1
                        time.sleep(RETRY_S)
                        continue
                    if status == 200:
                        with lock:
                            confirmed[(target, answer["ref"])] = text
                            stats["duplicate answers to retries"] += answer["duplicate"]
                        break
                    with lock:
                        stats[f"send status {status}"] += 1
                    time.sleep(RETRY_S)
                seq += 1
        finally:
            client.close()

    def reader(n: int) -> None:
        client = RawClient("127.0.0.1", port, timeout=30)
        mine = mailboxes[n]
        cursor = 0
        idle_after_stop = 0
        try:
            while True:
                if not sending.is_set():
                    if time.monotonic() > drain_until[0] or idle_after_stop >= 2:
                        return
                # Half the readers acknowledge inside the next poll, half with /v1/ack.
                try:
                    status, answer = client.post("/v1/receive", {"mailboxes": {mine: cursor}, "wait": 1,
                                                                 "limit": 500, "ack": n % 2 == 0})
                except (OSError, http.client.HTTPException):
                    with lock:
                        stats["receive failures (relay down)"] += 1
                    time.sleep(RETRY_S)
                    continue
                if status != 200:
                    with lock:
                        stats[f"receive status {status}"] += 1
                    time.sleep(RETRY_S)
                    continue
                messages = answer["messages"]
                idle_after_stop = 0 if messages or sending.is_set() else idle_after_stop + 1
                if not messages:
                    continue
                with lock:
                    received[mine].extend((m["ref"], m["contents"]) for m in messages)
                cursor = messages[-1]["ref"]
                if n % 2:
                    try:
                        client.post("/v1/ack", {"mailbox": mine, "through": cursor})
                    except (OSError, http.client.HTTPException):
                        pass  # the next acknowledgement covers these too
        finally:
            client.close()

    threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(CLIENTS)]
    threads += [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(CLIENTS)]
    start = time.monotonic()
    try:
        for t in threads:
            t.start()
        # SIGKILL somewhere in the middle third, then start again on the same port and store.
        time.sleep(LOAD_S / 3 + secrets.randbelow(int(LOAD_S / 3 * 1000)) / 1000)
        with lock:
            sent_before_kill = len(confirmed)
        relay.kill()
        killed_at = time.monotonic() - start
        relay.start()
        restarted_at = time.monotonic() - start
        time.sleep(max(0.0, LOAD_S - (time.monotonic() - start)))
        drain_until[0] = time.monotonic() + DRAIN_S
        sending.clear()
        for t in threads:
            t.join(timeout=DRAIN_S + 30)
        assert not any(t.is_alive() for t in threads), "clients did not finish within the drain time"
    finally:
        relay.stop()

    by_mailbox: dict[str, dict[int, str]] = defaultdict(dict)
    duplicated = 0
    for mailbox, items in received.items():
        refs = Counter(ref for ref, _ in items)
        duplicated += sum(c - 1 for c in refs.values())
        texts = Counter(text for _, text in items)
        duplicated += sum(c - 1 for c in texts.values() if c > 1)
        for ref, text in items:
            by_mailbox[mailbox][ref] = text
    lost = [key for key, text in confirmed.items() if by_mailbox[key[0]].get(key[1]) != text]
    got = sum(len(items) for items in received.values())
    unknown = sum(1 for items in received.values() for _, text in items if text not in attempted)
    unconfirmed = sum(1 for m, items in received.items() for ref, _ in items if (m, ref) not in confirmed)
    print(f"\nrelay load ({backend}): {CLIENTS} clients, {LOAD_S:.0f} s, SIGKILL at {killed_at:.1f} s, "
          f"serving again at {restarted_at:.1f} s")
    print(f"  messages with a ref: {len(confirmed)} ({sent_before_kill} before the kill), "
          f"{len(confirmed) / LOAD_S:.0f}/s")
    print(f"  received: {got}; lost: {len(lost)}; duplicated: {duplicated}; "
          f"received without a ref: {unconfirmed}; never sent: {unknown}")
    print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.items())))
    assert sent_before_kill > 0 and len(confirmed) > sent_before_kill
    assert stats["send failures (relay down)"] + stats["receive failures (relay down)"] > 0, "the kill was felt"
    assert not lost, f"{len(lost)} messages with a ref were never received, e.g. {lost[:3]}"
    assert duplicated == 0
    assert unknown == 0
    assert unconfirmed == 0  # every retry carried its key, so no message was stored without its sender's ref
    assert got == len(confirmed)
