"""Relay benchmarks (`make bench`): figures printed, never asserted.

For each store (a SQLite file; a throwaway PostgreSQL server with its default,
durable settings) one `otc relay serve` process on loopback, 50 concurrent
clients: each sends ~200-byte packages (a 100-byte message in base64) to the
next client's mailbox and long-polls its own, acknowledging by cursor. A
message counts when its reader has it. Printed:

* the delivery latency of a long-polling reader (from the start of the send
  request to the long poll returning the message), p50 and p99: on an idle
  relay, while the clients offer 500 messages/s on a fixed schedule, and while
  they send as fast as the relay answers (then every request queues behind
  about a hundred others);
* the messages per second sent and delivered in those two phases; the second
  is the relay's sustained maximum.

The clients run in separate processes (two for the load, one for the latency
probe) so their own interpreter locks do not throttle the relay; all share the
machine's cores with the relay and its store. Targets (issue 5): at least 500
messages/s and p50 under 50 ms on SQLite.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENTS = 50
PACKAGE = "T1RDMQ" + "A" * 194  # a base64 package of about the size a 100-byte message makes


class Http:
    """One keep-alive connection; JSON in, (status, JSON) out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            self.conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            return response.status, json.loads(response.read())
        except BaseException:
            self.conn.close()
            self.conn = None
            raise


def load_worker(port: int, mailboxes: list[str], mine: range, start: float, window: tuple[float, float],
                rate: float | None, out: multiprocessing.Queue) -> None:
    """Senders and readers for clients ``mine``; puts (sent, delivered) inside the window.

    Each sender sends ``rate`` messages per second on a fixed schedule, or with ``rate`` None
    as fast as the relay answers.
    """
    stop = window[1]
    counts = {"sent": 0, "delivered": 0, "errors": 0}
    lock = threading.Lock()

    def sender(n: int) -> None:
        http = Http(port)
        target = mailboxes[(n + 1) % len(mailboxes)]
        seq = 0
        due = start + (n / len(mailboxes)) / rate if rate else 0.0  # spread the clients' schedules
        while time.time() < stop:
            if rate:
                due += 1 / rate
                time.sleep(max(0.0, due - time.time()))
            try:
                status, _ = http.post("/v1/send", {"mailbox": target, "contents": PACKAGE, "id": f"{n}-{seq}"})
            except OSError:
                status = 0
            now = time.time()
            with lock:
                if status != 200:
                    counts["errors"] += 1
                elif window[0] <= now < window[1]:
                    counts["sent"] += 1
            seq += 1

    def reader(n: int) -> None:
        http = Http(port)
        cursor = 0
        while time.time() < stop:
            try:
                status, answer = http.post("/v1/receive", {"mailboxes": {mailboxes[n]: cursor}, "wait": 1,
                                                            "ack": True})
            except OSError:
                status, answer = 0, {}
            now = time.time()
            if status != 200:
                with lock:
                    counts["errors"] += 1
                continue
            if answer["messages"]:
                cursor = answer["messages"][-1]["ref"]
                if window[0] <= now < window[1]:
                    with lock:
                        counts["delivered"] += len(answer["messages"])

    time.sleep(max(0.0, start - time.time()))
    threads = [threading.Thread(target=f, args=(n,), daemon=True) for n in mine for f in (sender, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(counts)


def probe_worker(port: int, start: float, window: tuple[float, float], out: multiprocessing.Queue) -> None:
    """A sender every 20 ms and a long-polling reader on their own mailbox: delivery latencies."""
    mailbox = f"probe-{secrets.token_hex(8)}"
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    done = threading.Event()

    def reader() -> None:
        http = Http(port)
        cursor = 0
        while not done.is_set():
            status, answer = http.post("/v1/receive", {"mailboxes": {mailbox: cursor}, "wait": 5, "ack": True})
            now = time.perf_counter()
            for m in answer.get("messages", []):
                cursor = m["ref"]
                began = sent_at.pop(m["contents"], None)
                if began is not None:
                    latencies.append(now - began)

    time.sleep(max(0.0, start - time.time()))
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    http = Http(port)
    n = 0
    while time.time() < window[1]:
        text = f"{n}:{PACKAGE}"
        began = time.perf_counter()
        if time.time() >= window[0]:
            sent_at[text] = began
        http.post("/v1/send", {"mailbox": mailbox, "contents": text})
        n += 1
        time.sleep(0.02)
    time.sleep(0.5)
    done.set()
    out.put(sorted(latencies))


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_relay(db: str, log: Path) -> tuple[subprocess.Popen, int]:
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "onetimechat.cli", "relay", "serve", "--listen", "127.0.0.1:0", "--db", db,
             "--rate-limit", "0", "--waits-per-address", "0", "--connections-per-address", "0"],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if " listening on http://" in line:
            return proc, int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])
    raise RuntimeError(f"the relay did not start: {log.read_text()[-2000:]}")


def measure(port: int, proc: subprocess.Popen, warmup: float, seconds: float,
            rate: float | None) -> tuple[float, float, int, float, list[float]]:
    """One phase: (sends/s, deliveries/s, errors, relay CPU share, probe latencies)."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    mailboxes = [f"bench-{secrets.token_hex(8)}-{n}" for n in range(CLIENTS)]
    start = time.time() + 2.0  # the workers start together
    window = (start + warmup, start + warmup + seconds)
    half = CLIENTS // 2
    per_client = rate / CLIENTS if rate else None
    workers = [ctx.Process(target=load_worker, args=(port, mailboxes, part, start, window, per_client, out))
               for part in (range(0, half), range(half, CLIENTS))]
    workers.append(ctx.Process(target=probe_worker, args=(port, start, window, out)))
    for w in workers:
        w.start()
    time.sleep(max(0.0, window[0] - time.time()))
    cpu0 = cpu_seconds(proc.pid)
    time.sleep(max(0.0, window[1] - time.time()))
    cpu = (cpu_seconds(proc.pid) - cpu0) / seconds
    results = [out.get(timeout=300) for _ in workers]
    for w in workers:
        w.join()
    counts = [r for r in results if isinstance(r, dict)]
    latencies = next(r for r in results if isinstance(r, list))
    return (sum(c["sent"] for c in counts) / seconds, sum(c["delivered"] for c in counts) / seconds,
            sum(c["errors"] for c in counts), cpu, latencies)


def latency_text(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50) * 1000:.1f} ms, p99 {percentile(values, 99) * 1000:.1f} ms "
            f"({len(values)} probes)")


def run(label: str, db: str, folder: Path, warmup: float, seconds: float, rate: float) -> None:
    ctx = multiprocessing.get_context("spawn")
    proc, port = start_relay(db, folder / f"relay-{label}.log")
    try:
        out: multiprocessing.Queue = ctx.Queue()
        start = time.time() + 1.0
        probe = ctx.Process(target=probe_worker, args=(port, start, (start + 0.5, start + 3.5), out))
        probe.start()
        idle = out.get(timeout=120)
        probe.join()
        print(f"{label}: long-poll delivery latency, idle relay: {latency_text(idle)}")
        sent, delivered, errors, cpu, latencies = measure(port, proc, warmup, seconds, rate)
        print(f"{label}: {CLIENTS} clients offering {rate:,.0f} messages/s: {delivered:,.0f} delivered/s "
              f"({sent:,.0f} sends/s, relay CPU {cpu:.0%} of a core, {errors} errors); long-poll delivery "
              f"latency {latency_text(latencies)}")
        sent, delivered, errors, cpu, latencies = measure(port, proc, warmup, seconds, None)
        print(f"{label}: {CLIENTS} clients as fast as it answers: {delivered:,.0f} messages/s sent and delivered "
              f"({sent:,.0f} sends/s, relay CPU {cpu:.0%} of a core, {errors} errors); long-poll delivery "
              f"latency {latency_text(latencies)}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per store")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--rate", type=float, default=500.0, help="offered messages/s for the paced phase")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    print(f"relay: {os.cpu_count()} CPUs; the relay, its store and the clients share them")
    with tempfile.TemporaryDirectory(prefix="otc-bench-relay-") as tmp:
        folder = Path(tmp)
        if args.store in ("sqlite", "both"):
            run("SQLite", str(folder / "relay.db"), folder, args.warmup, args.seconds, args.rate)
        if args.store in ("postgresql", "both"):
            from tests.relay_pg import PostgresUnavailable, TempPostgres

            try:
                pg = TempPostgres(durable=True).start()
            except PostgresUnavailable as exc:
                print(f"PostgreSQL: not run ({exc})")
                return
            try:
                run("PostgreSQL", pg.create_database("bench"), folder, args.warmup, args.seconds, args.rate)
            finally:
                pg.stop()


if __name__ == "__main__":
    main()
