"""`otc hrng ...`: test a random source, or emulate a serial HRNG (DESIGN.md, "HRNG")."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time

from hrng.emulator import DEFAULT_FAULT_AFTER, DEFAULT_RATE, FAULTS, MAX_RATE, PROTOCOLS, Emulator
from hrng.errors import HRNGError, InsecureSource
from hrng.estimate import byte_counts, chi_square, most_common_value
from hrng.mixer import INSECURE_NOTICE, CheckedSource
from hrng.sources import open_source, parse_url
from onetimechat.cli.common import command_group
from onetimechat.errors import UsageError
from onetimechat.progress import Progress, human_bytes
from onetimechat.text import parse_size

SOURCE_HELP = ("serial:///dev/ttyACM0 (TrueRNG-style), onerng:///dev/ttyACM0, file:///dev/hwrng, or os: "
               "(the OS CSPRNG, with --insecure); parameters ?h=BITS claimed min-entropy per byte (default 8), "
               "&timeout=SECONDS (serial, default 2), &mode=N (OneRNG, default 0)")
CHUNK = 1 << 16
MIN_BYTES = 1024  # fewer say nothing about a source
def register(parts: argparse._SubParsersAction) -> None:
    sub = command_group(parts, "hrng", "the hardware random source",
                        "Test a random source, or emulate a serial HRNG for tests and demos.")

    p = sub.add_parser("test", help="read a source: throughput, health tests, min-entropy, chi-square",
                       description="Read --bytes from a source through the SP 800-90B health tests (after the "
                       "1024-sample start-up test) and report the throughput, the health results, the "
                       "most-common-value min-entropy estimate (SP 800-90B 6.3.1) and a chi-square statistic. "
                       "A health-test failure stops the read with an HRNG ALARM.")
    p.add_argument("--source", required=True, metavar="URL", help=SOURCE_HELP)
    p.add_argument("--bytes", type=parse_size, default=1 << 20, metavar="N",
                   help="how many bytes to read after the start-up test (default 1M)")
    p.add_argument("--insecure", action="store_true",
                   help="allow --source os:, which is not a hardware source; every output says so")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("emulate", help="a pseudo-terminal that acts as a serial HRNG (tests, demos)",
                       description="Open a pseudo-terminal that streams random bytes like a serial HRNG while a "
                       "reader holds it open, print the source URL to use on stdout, and run until interrupted. "
                       "A fake: its bytes are the OS CSPRNG's (or, with --seed, SHAKE-256 output).")
    p.add_argument("--rate", type=parse_size, default=DEFAULT_RATE, metavar="BYTES_PER_S",
                   help=f"bytes per second (default {DEFAULT_RATE})")
    p.add_argument("--fault", choices=FAULTS, default="none",
                   help="stuck: repeat one value; bias: only 4 bits per byte vary; dropout: go silent; "
                   "disconnect: vanish (default none)")
    p.add_argument("--fault-after", type=parse_size, default=DEFAULT_FAULT_AFTER, metavar="BYTES",
                   help=f"good bytes before the fault starts (default {DEFAULT_FAULT_AFTER})")
    p.add_argument("--dropout", type=float, metavar="SECONDS",
                   help="with --fault dropout: how long the silence lasts (default: for good)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="serial",
                   help="serial: stream while open (TrueRNG-style); onerng: also obey OneRNG commands")
    p.add_argument("--seed", metavar="TEXT", help="make the bytes SHAKE-256 of TEXT, so a run can be repeated")
    p.set_defaults(func=cmd_emulate)


def cmd_test(args: argparse.Namespace) -> int:
    spec = parse_url(args.source)
    if not spec.hardware and not args.insecure:
        raise InsecureSource("os: is the OS CSPRNG, not a hardware random source; add --insecure to test it anyway.")
    if spec.hardware and args.insecure:
        raise UsageError("--insecure is only for --source os:.")
    if args.bytes < MIN_BYTES:
        raise UsageError(f"--bytes must be at least {MIN_BYTES}.")
    if not spec.hardware:
        print(f"otc: {INSECURE_NOTICE}", file=sys.stderr)
    source = open_source(spec)
    try:
        checked = CheckedSource(source)
        progress = Progress(args.bytes, "hrng")
        counts = byte_counts(b"")
        start = time.monotonic()
        done = 0
        try:
            while done < args.bytes:
                data = checked.read(min(CHUNK, args.bytes - done))
                done += len(data)
                counts += byte_counts(data)
                progress.update(done)
        except HRNGError:
            if progress.interactive:
                progress.stream.write("\n")  # the error goes below the bar, not onto it
            raise
        elapsed = max(time.monotonic() - start, 1e-9)
        progress.finish()
        description = source.describe()
    finally:
        source.close()
    mcv, chi = most_common_value(counts), chi_square(counts)
    stats, cut = checked.stats, checked.cutoffs
    report = {
        "source": spec.url(),
        "description": description,
        "insecure": not spec.hardware,
        "claimed_min_entropy": cut.h,
        "alpha_log2": round(math.log2(cut.alpha), 6),
        "bytes": done,
        "samples_tested": stats.samples,
        "seconds": round(elapsed, 6),
        "bytes_per_second": round(done / elapsed, 1),
        "health": {
            "passed": True,
            "startup_samples": checked.monitor.startup,
            "rct_cutoff": cut.rct,
            "longest_run": stats.longest_run,
            "apt_cutoff": cut.apt,
            "apt_window": cut.window,
            "highest_apt_count": stats.highest_apt,
            "windows": stats.windows,
        },
        "mcv": {"p_hat": mcv.p_hat, "p_upper": mcv.p_upper, "min_entropy": mcv.min_entropy},
        "chi_square": {"statistic": chi.statistic, "dof": chi.dof, "p_value": chi.p_value},
    }
    if report["insecure"]:
        report["notice"] = INSECURE_NOTICE
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lines = [
        ("source", description),
        ("claimed", f"{cut.h:g} bits of min-entropy per byte; false-alarm rate 2^{math.log2(cut.alpha):g} per test"),
        ("read", f"{done} bytes in {elapsed:.2f} s: {human_bytes(done / elapsed)}/s "
                 f"({stats.samples} samples tested, the first {checked.monitor.startup} as the start-up test)"),
        ("health", f"passed: RCT cutoff {cut.rct} (longest run {stats.longest_run}), APT cutoff {cut.apt} "
                   f"per {cut.window}-sample window (highest count {stats.highest_apt}), {stats.windows} windows"),
        ("min-entropy", f"{mcv.min_entropy:.3f} bits per byte (most common value, SP 800-90B 6.3.1: "
                        f"p = {mcv.p_hat:.5f}, 99% upper bound {mcv.p_upper:.5f})"),
        ("chi-square", f"{chi.statistic:.1f} with {chi.dof} degrees of freedom (p = {chi.p_value:.3f})"),
    ]
    prefix = "INSECURE " if report["insecure"] else ""
    for label, text in lines:
        print(f"{prefix}{label:<12} {text}")
    if report["insecure"]:
        print(f"{INSECURE_NOTICE}: these figures say nothing about any hardware.")
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    if not 1 <= args.rate <= MAX_RATE:
        raise UsageError(f"--rate must be between 1 and {MAX_RATE} bytes per second.")
    if args.dropout is not None and (args.fault != "dropout" or not args.dropout > 0):
        raise UsageError("--dropout takes a positive number of seconds, with --fault dropout.")
    emulator = Emulator(rate=args.rate, fault=args.fault, fault_after=args.fault_after, protocol=args.protocol,
                        seed=args.seed.encode() if args.seed is not None else None, dropout=args.dropout)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    emulator.start()
    try:
        print(emulator.url, flush=True)
        fault = "no fault" if args.fault == "none" else f"fault {args.fault} after {args.fault_after} bytes"
        print(f"otc: emulated {args.protocol} HRNG at {emulator.path}, {args.rate} bytes/s, {fault}; a fake for "
              "tests and demos. Ctrl-C stops it.", file=sys.stderr, flush=True)
        while not emulator.disconnected.wait(0.2):
            pass
        print("otc: the emulated HRNG disconnected itself (--fault disconnect).", file=sys.stderr)
    except KeyboardInterrupt:
        print("otc: emulated HRNG stopped.", file=sys.stderr)
    finally:
        emulator.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0
