"""Check the report a booted image prints on its serial console (image/test.sh).

    python image/check_report.py --listen 10.77.0.1:8470 < report

The report (image/test/otc-image-test-report) has one fact a line:
``unit NAME STATE``, ``listen PROTO LOCAL-ADDRESS``, ``failed N``,
``failed-unit ...``, ``imports ok``, ``panel-fds N``, ``root-mib N`` and ``log ...``. The
image passes when the device's units are active, no unit failed, the device's
process holds the display (its touchscreen opened the framebuffer device),
the device RPC listens on the cable-side address, and nothing else listens
anywhere but the DHCP server on the cable-side interface.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field

ACTIVE_UNITS = ("otc-device", "otc-hrng", "otc-growroot", "systemd-networkd")
CABLE_INTERFACES = ("eth0", "end0")
DHCP_SERVER_PORT = 67


@dataclass
class Report:
    units: dict[str, str] = field(default_factory=dict)
    listening: list[tuple[str, str]] = field(default_factory=list)
    failed: int | None = None
    failed_units: list[str] = field(default_factory=list)
    root_mib: int | None = None
    imports: str = ""
    panel_fds: int | None = None
    log: list[str] = field(default_factory=list)


def parse(text: str) -> Report:
    report = Report()
    for raw in text.splitlines():
        # A line the journal echoed to the console starts "[  52.42] unit[pid]: ".
        line = re.sub(r"^\s*\[\s*[0-9.]+\]\s+[^:\s]+:\s", "", raw.strip())
        kind, _, rest = line.partition(" ")
        if kind == "unit":
            name, _, state = rest.partition(" ")
            report.units[name] = state.strip()
        elif kind == "listen":
            proto, _, local = rest.partition(" ")
            report.listening.append((proto, local.strip()))
        elif kind == "failed" and rest.strip().isdigit():
            report.failed = int(rest)
        elif kind == "failed-unit":
            report.failed_units.append(rest)
        elif kind == "root-mib" and rest.strip().isdigit():
            report.root_mib = int(rest)
        elif kind == "panel-fds" and rest.strip().isdigit():
            report.panel_fds = int(rest)
        elif kind == "imports":
            report.imports = rest.strip()
        elif kind == "log":
            report.log.append(rest)
    return report


def _cable_dhcp(proto: str, local: str) -> bool:
    """networkd's DHCP server: UDP port 67 bound to the cable-side interface only."""
    address, _, port = local.rpartition(":")
    _, _, interface = address.partition("%")
    return proto == "udp" and port == str(DHCP_SERVER_PORT) and interface in CABLE_INTERFACES


def problems(report: Report, listen: str) -> list[str]:
    """What is wrong with the booted image, as sentences; empty when it passes."""
    found = []
    for unit in ACTIVE_UNITS:
        state = report.units.get(unit)
        if state != "active":
            found.append(f"{unit}.service is {state or 'not reported'}, not active")
    if report.failed != 0:
        found.append(f"failed units: {report.failed if report.failed is not None else 'not reported'} "
                     f"{' '.join(report.failed_units)}".rstrip())
    if report.imports != "ok":
        found.append(f"the image's Python packages do not all import: {report.imports or 'not reported'}")
    if not report.panel_fds:
        found.append("the device's touchscreen does not hold the display (no framebuffer open in its process)")
    if ("tcp", listen) not in report.listening:
        found.append(f"the device RPC does not listen on {listen}")
    for proto, local in report.listening:
        if (proto, local) != ("tcp", listen) and not _cable_dhcp(proto, local):
            found.append(f"something else listens: {proto} {local}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a booted image's serial-console report (stdin).")
    parser.add_argument("--listen", required=True, help="where the device RPC must listen (HOST:PORT)")
    args = parser.parse_args(argv)
    found = problems(parse(sys.stdin.read()), args.listen)
    for problem in found:
        print(f"image-test: FAILED: {problem}", file=sys.stderr)
    if not found:
        print(f"image-test: units active, the touchscreen holds the display, the RPC listens on {args.listen} only, "
              "nothing else but the cable's DHCP")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
