"""Relay benchmarks (`make bench`): figures printed, never asserted.

For each store (a SQLite file; a throwaway PostgreSQL server with its default,
durable settings) `otc relay serve` on loopback with 1 and with 2 worker
processes (`--workers`), 50 clients: each sends ~200-byte packages (a 100-byte
message in base64) to the next client's mailbox and long-polls its own,
acknowledging by cursor. A message counts when its reader has it. Printed:

* the delivery latency of a long-polling reader (from the start of the send
  request to the long poll returning the message), p50 and p99: on an idle
  relay, and while the clients offer 500 messages/s on a fixed schedule;
* the relay's sustained maximum: messages per second sent and delivered while
  every client sends as fast as the relay answers, measured in ROUNDS rounds
  that alternate 1 and 2 workers (the machine is shared: alternating keeps a
  slow minute from favouring one), as the median and the range;
* where the CPU went: the relay's processes, the store's server (PostgreSQL),
  the load generator, and everything else on the machine (in cores: 100% is
  one core of the two).

The relay runs with its default limits. They are per client address, so the
clients do not share one: each client's sender and its reader connect from
their own loopback address (127.0.1.n and 127.0.2.n, n = 1..50), 100 addresses
each held to the default 50 requests/s, as 50 people's devices would be.

The load generator is one C process (bench/native/loadgen.c, built with the
system compiler; epoll, raw keep-alive HTTP/1.1 connections), so it leaves the
cores to the relay (3-5% of a core at 2,000 messages/s); its CPU is printed.
Without a compiler, or with --python-loadgen, the same clients run as asyncio
coroutines in one Python process (15-25% of a core at that rate). The latency probe (a sender every 20 ms
and its long-polling reader) runs in a process of its own. Targets: issue 5, at
least 500 messages/s and p50 under 50 ms on SQLite; issue 21, 2 workers at
least 1.5 times one on this 2-core machine. Under the default limits 50 clients
can send at most 50 x 50 = 2,500 messages/s (printed with the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.config import RelayConfig  # noqa: E402 - after the path is set

CLIENTS = 50
RATE_LIMIT = RelayConfig().rate_limit  # requests/s per client address, the relay's default
LOADGEN: Path | None = None  # the C load generator (bench/native/loadgen.c), once built
TREE = ROOT  # the checkout whose relay runs (--tree: another one, to compare in the same minutes)
RELAY_ARGS: list[str] = []  # more `otc relay serve` options (--writer)
ROUNDS = 3
PACKAGE = "T1RDMQ" + "A" * 194  # a base64 package of about the size a 100-byte message makes


class Http:
    """One keep-alive connection; JSON in, (status, JSON) out."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120,
                                                   source_address=(self.source, 0))
        try:
            self.conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            return response.status, json.loads(response.read())
        except BaseException:
            self.conn.close()
            self.conn = None
            raise


class Conn:
    """One raw keep-alive HTTP/1.1 connection from a given loopback source address."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port,
                                                                     local_addr=(self.source, 0))
        assert self.reader is not None
        try:
            self.writer.write(b"POST %s HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body))
            head = await self.reader.readuntil(b"\r\n\r\n")
            at = head.lower().index(b"content-length:") + 15
            data = await self.reader.readexactly(int(head[at:head.index(b"\r\n", at)]))
            return int(head[9:12]), data
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.writer.close()
            self.writer = None
            return 0, b""


def load_worker(port: int, mailboxes: list[str], start: float, window: tuple[float, float], rate: float | None,
                out: multiprocessing.Queue) -> None:
    """Every client's sender and reader as coroutines; puts its counts inside the window and its CPU.

    Each sender sends ``rate`` messages per second on a fixed schedule, or with ``rate`` None
    as fast as the relay answers.
    """
    stop = window[1]
    counts = {"sent": 0, "delivered": 0, "errors": 0}
    statuses: dict[int, int] = {}  # the errors' HTTP statuses (0: a connection failed)
    tag = secrets.token_hex(4)

    def failed(status: int) -> None:
        counts["errors"] += 1
        statuses[status] = statuses.get(status, 0) + 1

    async def sender(n: int) -> None:
        conn = Conn(port, f"127.0.1.{n + 1}")
        target = mailboxes[(n + 1) % len(mailboxes)]
        seq = 0
        due = start + (n / len(mailboxes)) / rate if rate else 0.0  # spread the clients' schedules
        while time.time() < stop:
            if rate:
                due += 1 / rate
                await asyncio.sleep(max(0.0, due - time.time()))
            body = b'{"mailbox": "%s", "contents": "%s", "id": "%s-%d-%d"}' % (
                target.encode(), PACKAGE.encode(), tag.encode(), n, seq)
            status, _ = await conn.post(b"/v1/send", body)
            now = time.time()
            if status != 200:
                failed(status)
                await asyncio.sleep(0.1)
            elif window[0] <= now < window[1]:
                counts["sent"] += 1
            seq += 1

    async def reader(n: int) -> None:
        conn = Conn(port, f"127.0.2.{n + 1}")
        cursor = 0
        while time.time() < stop:
            body = b'{"mailboxes": {"%s": %d}, "wait": 1, "ack": true}' % (mailboxes[n].encode(), cursor)
            status, data = await conn.post(b"/v1/receive", body)
            now = time.time()
            if status != 200:
                failed(status)
                await asyncio.sleep(0.1)
                continue
            messages = json.loads(data)["messages"]
            if messages:
                cursor = messages[-1]["ref"]
                if window[0] <= now < window[1]:
                    counts["delivered"] += len(messages)

    async def main() -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
        await asyncio.gather(*(f(n) for n in range(CLIENTS) for f in (sender, reader)))

    asyncio.run(main())
    out.put({**counts, "statuses": statuses})


def probe_worker(port: int, start: float, window: tuple[float, float], out: multiprocessing.Queue) -> None:
    """A sender every 25 ms and a long-polling reader on their own mailbox (each from its own address, within
    the default 50 requests/s): delivery latencies."""
    mailbox = f"probe-{secrets.token_hex(8)}"
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    done = threading.Event()

    def reader() -> None:
        http = Http(port, "127.0.3.2")
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
    http = Http(port, "127.0.3.1")
    n = 0
    while time.time() < window[1]:
        text = f"{n}:{PACKAGE}"
        began = time.perf_counter()
        if time.time() >= window[0]:
            sent_at[text] = began
        http.post("/v1/send", {"mailbox": mailbox, "contents": text})
        n += 1
        time.sleep(0.025)
    time.sleep(0.5)
    done.set()
    out.put(sorted(latencies))


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """``pid`` and its children (a relay's workers, a PostgreSQL server's backends)."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def start_relay(db: str, workers: int, log: Path) -> tuple[subprocess.Popen, int, int | None]:
    """`otc relay serve` with its default limits; its process, port and writer process (if it has one)."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "onetimechat.cli", "relay", "serve", "--listen", "127.0.0.1:0", "--db", db,
             "--workers", str(workers), *RELAY_ARGS],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=TREE)
    assert proc.stdout is not None
    writer = None
    for line in proc.stdout:
        if " writer process, pid " in line:
            writer = int(line.rsplit(" ", 1)[1])
        if " listening on http://" in line:
            return proc, int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1]), writer
    raise RuntimeError(f"the relay did not start: {log.read_text()[-2000:]}")


class Phase:
    """One measured phase's figures."""

    def __init__(self, sent: float, delivered: float, errors: int, statuses: dict, relay_cpu: list[float],
                 store_cpu: float | None, load_cpu: float, latencies: list[float], other_cpu: float,
                 writer_cpu: float | None = None) -> None:
        self.sent, self.delivered, self.errors, self.statuses = sent, delivered, errors, statuses
        self.other_cpu = other_cpu
        self.relay_cpu, self.store_cpu, self.load_cpu, self.latencies = relay_cpu, store_cpu, load_cpu, latencies
        self.writer_cpu = writer_cpu  # the writer process's share of relay_cpu (relay/writer.py), if it has one

    def cpu_text(self) -> str:
        relay = f"relay CPU {sum(self.relay_cpu):.0%} of a core"
        if len(self.relay_cpu) > 2:  # the parent (idle) and its workers
            workers = sorted(self.relay_cpu[1:])
            if self.writer_cpu is not None:
                workers.remove(self.writer_cpu)
            relay += " (workers " + " + ".join(f"{c:.0%}" for c in workers)
            relay += "" if self.writer_cpu is None else f", writer {self.writer_cpu:.0%}"
            relay += ")"
        store = "" if self.store_cpu is None else f", PostgreSQL {self.store_cpu:.0%}"
        errors = f", {self.errors} errors {self.statuses}" if self.errors else ", no errors"
        return (f"{relay}{store}, load generator {self.load_cpu:.0%}, other work on the machine "
                f"{self.other_cpu:.0%}{errors}")

    def per_message_text(self) -> str:
        """CPU time per message delivered, by process (less sensitive to the machine's other work than the rate)."""
        each = 1e6 / max(self.delivered, 1e-9)
        workers = sum(self.relay_cpu) - (self.writer_cpu or 0.0)
        parts = [f"relay workers {workers * each:.0f}"]
        if self.writer_cpu is not None:
            parts.append(f"writer {self.writer_cpu * each:.0f}")
        if self.store_cpu is not None:
            parts.append(f"PostgreSQL {self.store_cpu * each:.0f}")
        parts.append(f"load generator {self.load_cpu * each:.0f}")
        total = sum(self.relay_cpu) + (self.store_cpu or 0.0) + self.load_cpu
        return f"CPU per message: {total * each:.0f} us ({', '.join(parts)})"

    def cpu_per_message(self) -> float:
        """Seconds of CPU per message delivered: the relay's processes, the store's server, the load generator."""
        return (sum(self.relay_cpu) + (self.store_cpu or 0.0) + self.load_cpu) / max(self.delivered, 1e-9)


def measure(port: int, proc: subprocess.Popen, store_pid: int | None, warmup: float, seconds: float,
            rate: float | None, probe: bool, writer: int | None = None) -> Phase:
    """One phase: the load generator (and with ``probe`` the latency probe) against the relay."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    mailboxes = [f"bench-{secrets.token_hex(8)}-{n}" for n in range(CLIENTS)]
    start = time.time() + 2.0  # the processes start together
    window = (start + warmup, start + warmup + seconds)
    per_client = rate / CLIENTS if rate else None
    load: multiprocessing.process.BaseProcess | subprocess.Popen
    if LOADGEN is not None:
        prefix = f"bench-{secrets.token_hex(8)}"
        mailboxes = [f"{prefix}-{n}" for n in range(CLIENTS)]
        load = subprocess.Popen([str(LOADGEN), str(port), str(CLIENTS), prefix, repr(start), repr(window[0]),
                                 repr(window[1]), repr(per_client or 0.0), secrets.token_hex(4)],
                                stdout=subprocess.PIPE, text=True)
        workers: list = []
    else:
        load = ctx.Process(target=load_worker, args=(port, mailboxes, start, window, per_client, out))
        workers = [load]
    if probe:
        workers.append(ctx.Process(target=probe_worker, args=(port, start, window, out)))
    for w in workers:
        w.start()
    time.sleep(max(0.0, window[0] - time.time()))
    relay_pids = family(proc.pid)
    store_pids = family(store_pid) if store_pid else []
    relay0 = [cpu_seconds(pid) for pid in relay_pids]
    store0 = sum(cpu_seconds(pid) for pid in store_pids)
    load0 = cpu_seconds(load.pid) if load.pid else 0.0
    mine = [pid for pid in {*relay_pids, *store_pids, load.pid, *(w.pid for w in workers)} if pid]
    busy0, mine0 = machine_busy(), sum(cpu_seconds(pid) for pid in mine)
    time.sleep(max(0.0, window[1] - time.time()))
    # What other programs took meanwhile (other sessions share this machine), in cores.
    other_cpu = max(0.0, (machine_busy() - busy0) - (sum(cpu_seconds(pid) for pid in mine) - mine0)) / seconds
    relay_cpu = [(cpu_seconds(pid) - c) / seconds for pid, c in zip(relay_pids, relay0, strict=True)]
    store_cpu = (sum(cpu_seconds(pid) for pid in store_pids) - store0) / seconds if store_pid else None
    load_cpu = ((cpu_seconds(load.pid) if load.pid else 0.0) - load0) / seconds
    results = [out.get(timeout=300) for _ in workers]
    for w in workers:
        w.join()
    if isinstance(load, subprocess.Popen):
        answer, _ = load.communicate(timeout=300)
        results.append(json.loads(answer))
    counts = next(r for r in results if isinstance(r, dict))
    latencies = next((r for r in results if isinstance(r, list)), [])
    writer_cpu = relay_cpu[relay_pids.index(writer)] if writer in relay_pids else None
    return Phase(counts["sent"] / seconds, counts["delivered"] / seconds, counts["errors"], counts["statuses"],
                 relay_cpu, store_cpu, load_cpu, latencies, other_cpu, writer_cpu)


def latency_text(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50) * 1000:.1f} ms, p99 {percentile(values, 99) * 1000:.1f} ms "
            f"({len(values)} probes)")


def worker_label(workers: int) -> str:
    return f"{workers} worker{'s' if workers > 1 else ''}"


def run(label: str, db: str, folder: Path, warmup: float, seconds: float, rate: float, rounds: int,
        store_pid: int | None, sustained_only: bool = False) -> None:
    ctx = multiprocessing.get_context("spawn")
    sustained: dict[int, list[float]] = {1: [], 2: []}
    per_cpu: dict[int, list[float]] = {1: [], 2: []}  # messages per second of the relay's CPU
    cost: dict[int, list[float]] = {1: [], 2: []}  # CPU seconds per message, every process the bench runs
    for n in range(rounds):
        for workers in (1, 2) if n % 2 == 0 else (2, 1):
            name = f"{label}, {worker_label(workers)}"
            proc, port, writer = start_relay(db, workers, folder / f"relay-{label}-{workers}.log")
            try:
                if n == 0 and not sustained_only:
                    out: multiprocessing.Queue = ctx.Queue()
                    start = time.time() + 1.0
                    probe = ctx.Process(target=probe_worker, args=(port, start, (start + 0.5, start + 3.5), out))
                    probe.start()
                    idle = out.get(timeout=120)
                    probe.join()
                    print(f"{name}: long-poll delivery latency, idle relay: {latency_text(idle)}", flush=True)
                    paced = measure(port, proc, store_pid, warmup, seconds, rate, probe=True, writer=writer)
                    print(f"{name}: {CLIENTS} clients offering {rate:,.0f} messages/s: {paced.delivered:,.0f} "
                          f"delivered/s ({paced.sent:,.0f} sends/s; {paced.cpu_text()}); long-poll delivery "
                          f"latency {latency_text(paced.latencies)}", flush=True)
                full = measure(port, proc, store_pid, warmup, seconds, None, probe=False, writer=writer)
                sustained[workers].append(full.delivered)
                per_cpu[workers].append(full.delivered / max(sum(full.relay_cpu), 1e-9))
                cost[workers].append(full.cpu_per_message())
                print(f"{name}, round {n + 1}: {CLIENTS} clients as fast as it answers: {full.delivered:,.0f} "
                      f"messages/s sent and delivered ({full.sent:,.0f} sends/s; {full.cpu_text()}; "
                      f"{full.per_message_text()})", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=90)
    one, two = (statistics.median(sustained[w]) for w in (1, 2))
    spread = {w: f"{min(v):,.0f}-{max(v):,.0f}" for w, v in sustained.items()}
    print(f"{label}: sustained messages/s at {CLIENTS} clients, median of {rounds} (range): 1 worker {one:,.0f} "
          f"({spread[1]}), 2 workers {two:,.0f} ({spread[2]}): 2 workers give {two / one:.2f} times one "
          f"(machine load average now {load_average()}; the default limit of {RATE_LIMIT:g} requests/s per "
          f"address lets {CLIENTS} clients send at most {CLIENTS * RATE_LIMIT:,.0f} messages/s)", flush=True)
    # What the relay does with the CPU it gets, whatever the machine's other work leaves it.
    print(f"{label}: messages per second of relay CPU (one core), median: 1 worker "
          f"{statistics.median(per_cpu[1]):,.0f}, 2 workers {statistics.median(per_cpu[2]):,.0f}", flush=True)
    # The most 2 workers could move here, whatever the relay's code: every process the bench runs (relay, store
    # server, load generator) shares the machine's cores, and the default limits cap what 50 clients may send.
    cores = os.cpu_count() or 1
    by_cpu = cores / statistics.median(cost[2])
    cap = CLIENTS * RATE_LIMIT
    print(f"{label}: ceiling for 2 workers on this machine: its {cores} cores at the CPU per message measured with "
          f"2 workers ({statistics.median(cost[2]) * 1e6:,.0f} us, store server and load generator included) "
          f"allow {by_cpu:,.0f} messages/s ({by_cpu / one:.2f} times one worker's median), the default limits "
          f"{cap:,.0f} ({cap / one:.2f} times); measured {two / one:.2f} times", flush=True)


def load_average() -> str:
    """The kernel's 1, 5 and 15 minute load averages (other sessions share this machine)."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def build_loadgen(folder: Path) -> Path | None:
    """bench/native/loadgen.c built with the system compiler; None (the Python generator is used) without one."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        print("no C compiler: the Python load generator is used (it takes more of the cores)")
        return None
    binary = folder / "loadgen"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(ROOT / "bench/native/loadgen.c")], check=True)
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--rate", type=float, default=500.0, help="offered messages/s for the paced phase")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="sustained-rate rounds per worker count")
    parser.add_argument("--python-loadgen", action="store_true",
                        help="drive the relay with the Python asyncio generator instead of the C one")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--sustained-only", action="store_true",
                        help="measure only the sustained rate (no latency phases)")
    parser.add_argument("--writer", choices=("on", "off"), default=None,
                        help="run the relay with --writer or --no-writer (default: its own default)")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the checkout whose relay runs (to compare another branch in the same minutes)")
    args = parser.parse_args()
    global TREE
    TREE = args.tree.resolve()
    if args.writer is not None:
        RELAY_ARGS.append("--writer" if args.writer == "on" else "--no-writer")
    print(f"relay from {TREE}{' ' + ' '.join(RELAY_ARGS) if RELAY_ARGS else ''}")
    print(f"relay: {os.cpu_count()} CPUs; the relay, its store and the load generator share them; default limits, "
          f"each client's sender and reader on its own loopback address; machine load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="otc-bench-relay-") as tmp:
        folder = Path(tmp)
        global LOADGEN
        LOADGEN = None if args.python_loadgen else build_loadgen(folder)
        print("load generator: " + (f"{LOADGEN.name} (C, bench/native/loadgen.c)" if LOADGEN else
                                    "Python asyncio (one process)"), flush=True)
        if args.store in ("sqlite", "both"):
            run("SQLite", str(folder / "relay.db"), folder, args.warmup, args.seconds, args.rate, args.rounds, None,
                args.sustained_only)
        if args.store in ("postgresql", "both"):
            from tests.relay_pg import PostgresUnavailable, TempPostgres

            try:
                pg = TempPostgres(durable=True).start()
            except PostgresUnavailable as exc:
                print(f"PostgreSQL: not run ({exc})")
                return
            try:
                postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
                run("PostgreSQL", pg.create_database("bench"), folder, args.warmup, args.seconds, args.rate,
                    args.rounds, postmaster, args.sustained_only)
            finally:
                pg.stop()


if __name__ == "__main__":
    main()
