"""Print a built wheel's runtime requirements, one per line, for pip -r.

    python image/requirements.py WHEEL [--extra NAME]... [--without NAME]...

Requirements of the named extras are added (without their markers); those
named by --without are left out (the image takes them from Debian).
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from email.parser import Parser


def requirements(metadata: str, extras: list[str], without: list[str]) -> list[str]:
    """The Requires-Dist lines of ``metadata`` that apply without extras or with ``extras``."""
    skip = {_canonical(name) for name in without}
    out = []
    for line in Parser().parsestr(metadata).get_all("Requires-Dist") or []:
        spec, _, marker = line.partition(";")
        extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker)
        if extra and _canonical(extra.group(1)) not in {_canonical(e) for e in extras}:
            continue
        if marker.strip() and not extra:
            spec = line  # a platform marker: pip evaluates it
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if name and _canonical(name.group(1)) not in skip and spec.strip() not in out:
            out.append(spec.strip())  # once: the [pi] extra repeats [device]'s requirements
    return out


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--without", action="append", default=[])
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(name).decode("utf-8")
    print("\n".join(requirements(metadata, args.extra, args.without)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
