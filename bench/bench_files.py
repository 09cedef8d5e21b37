"""Files (`make bench`): figures printed, never asserted (docs/attachments.md).

1. The device-side encryption rate alone: a device sealing 1 MiB parts of a file (ChaCha20-Poly1305 in the
   STREAM construction, the SHA-256 of each part recorded durably before it is given out, and the running
   SHA-256 of the file), and the receiving device opening them.
2. End to end, laptop -> device -> relay -> device -> laptop on loopback: a 256 MiB file (BENCH_FILE_MIB to
   change it) from `otc send --file` to `otc recv` having saved it and checked its SHA-256. Every part is a
   real process: a relay (`otc relay serve`, its default limits but the per-address request rate, which a
   relay's operator sets and two laptops on one address would share), two devices (`otc device serve
   --confirm auto`) and two laptops. Target: at least 50 MB/s on the project's 2-core machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OTC = [sys.executable, "-m", "onetimechat.cli"]
MiB = 1 << 20
FILE_MIB = int(os.environ.get("BENCH_FILE_MIB", "256"))


def device_rate(work: Path) -> None:
    from device.engine import Device
    from device.localpair import pair_local
    from device.storage.padstore import PadStore
    from onetimechat import attachment as att

    for home, name in ((work / "a", "alice"), (work / "b", "bob")):
        PadStore.init(home, name).close()
    with PadStore(work / "a") as a, PadStore(work / "b") as b:
        pair_local(a, b, 1 << 20, random_bytes=os.urandom)
    size = 64 * MiB
    data = os.urandom(size)
    with Device.open(work / "a") as alice, Device.open(work / "b") as bob:
        header, packaged = alice.files.begin("bob", "bench.bin", size, hashlib.sha256(data).digest())
        bob.unpackage(packaged.package)
        view = memoryview(data)
        parts = []
        t0 = time.perf_counter()
        for i in range(header.parts):
            part, _ = alice.files.seal(header.file_id, i, view[i * att.PART_SIZE : (i + 1) * att.PART_SIZE])
            parts.append(part)
        sealed = time.perf_counter() - t0
        t0 = time.perf_counter()
        for part in parts:
            bob.files.open_part(part)  # type: ignore[arg-type]
        opened = time.perf_counter() - t0
    print(f"device sealing a file: {size / sealed / 1e6:.0f} MB/s ({size // MiB} MiB in 1 MiB parts, "
          f"{sealed:.2f} s; ChaCha20-Poly1305 STREAM, each part's SHA-256 recorded, the file's SHA-256)")
    print(f"device opening a file: {size / opened / 1e6:.0f} MB/s ({opened:.2f} s; in order, each part's place "
          "recorded)")


def start(args: list[str], log: Path, pattern: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    out = open(log, "w")  # noqa: SIM115 - the server's output, read while it runs
    proc = subprocess.Popen([*OTC, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    for _ in range(300):
        found = re.search(pattern + r" (http://[0-9.:]+)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"a server did not start: {log.read_text()[-2000:]}")


def run(args: list[str], env: dict | None = None) -> None:
    subprocess.run([*OTC, *args], cwd=ROOT, check=True, env=env, stdout=subprocess.DEVNULL)


def end_to_end(work: Path) -> None:
    from client.files import sha256_file

    work.mkdir(parents=True)
    procs = []
    try:
        relay_proc, relay = start(["relay", "serve", "--listen", "127.0.0.1:0", "--db",
                                   f"sqlite:///{work / 'relay.db'}", "--rate-limit", "100000", "--burst", "100000"],
                                  work / "relay.log", "listening on")
        procs.append(relay_proc)
        homes = {name: work / name for name in ("alice", "bob")}
        for name, home in homes.items():
            run(["device", "init", "--home", str(home), "--name", name, "--no-pin"])
        run(["pad", "pair-local", "--size", "1M", str(homes["alice"]), str(homes["bob"])])
        urls, envs = {}, {}
        for name, home in homes.items():
            proc, urls[name] = start(["device", "serve", "--home", str(home), "--listen", "127.0.0.1:0", "--confirm",
                                      "auto"], work / f"{name}.log", "serving on")
            procs.append(proc)
            envs[name] = {**os.environ, "OTC_CLIENT_HOME": str(work / f"{name}-laptop")}
            run(["client", "pair", "--device", urls[name], "--name", f"{name}-laptop", "--code",
                 (home / "pairing-code").read_text().strip()], env=envs[name])
        original = work / "film.mkv"
        with open(original, "wb") as f:
            for _ in range(FILE_MIB):
                f.write(os.urandom(MiB))
        downloads = work / "downloads"
        servers = dict(zip(("relay", "device alice", "device bob"), procs))
        before = {name: _cpu(proc.pid) for name, proc in servers.items()}
        t0 = time.perf_counter()
        receiver = subprocess.Popen([*OTC, "recv", "--device", urls["bob"], "--relay", relay, "--downloads",
                                     str(downloads), "--wait", "60"], cwd=ROOT, env=envs["bob"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sender = subprocess.Popen([*OTC, "send", "--device", urls["alice"], "--relay", relay, "--file",
                                   str(original), "bob"], cwd=ROOT, env=envs["alice"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        _, status, sender_use = os.wait4(sender.pid, 0)
        sent = time.perf_counter() - t0
        _, _, receiver_use = os.wait4(receiver.pid, 0)
        total = time.perf_counter() - t0
        sender.returncode = receiver.returncode = 0  # reaped above
        if status:
            raise SystemExit("otc send failed")
        used = {name: _cpu(proc.pid) - before[name] for name, proc in servers.items()}
        used["laptop sending"] = sender_use.ru_utime + sender_use.ru_stime
        used["laptop receiving"] = receiver_use.ru_utime + receiver_use.ru_stime
        (saved,) = [p for p in downloads.iterdir() if not p.name.startswith(".")]
        same = sha256_file(saved) == sha256_file(original)
        size = FILE_MIB * MiB
        print(f"end to end, {FILE_MIB} MiB laptop -> device -> relay -> device -> laptop on loopback: "
              f"{size / total / 1e6:.0f} MB/s ({total:.1f} s from `otc send` starting to `otc recv` done; the "
              f"sender finished after {sent:.1f} s; SHA-256 {'identical' if same else 'DIFFERENT'})")
        # Where the time goes: CPU per MiB in each process (a machine shared with others waits for it too).
        print("  CPU per MiB: " + ", ".join(f"{name} {seconds / FILE_MIB * 1000:.1f} ms"
                                             for name, seconds in used.items())
              + f"; in all {sum(used.values()) / FILE_MIB * 1000:.1f} ms, over {total / FILE_MIB * 1000:.1f} ms "
              f"of wall time per MiB and {os.cpu_count()} cores")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def _cpu(pid: int) -> float:
    """CPU seconds (user and system) a running process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="otc-bench-files-") as work:
        device_rate(Path(work) / "device")
        end_to_end(Path(work) / "e2e")


if __name__ == "__main__":
    main()
