"""What the parts' command lines share: a command group, and where a command runs.

A command that can run on the device itself (``--home``) or from the laptop paired with
it (``--device``) takes both, exclusively; given neither, ``otc`` uses the device the
laptop remembers (onetimechat/cli/__init__.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

PIN_FILE_HELP = "the PIN of a PIN-locked device"


def command_group(parts: argparse._SubParsersAction, name: str, help_text: str,
                  description: str) -> argparse._SubParsersAction:
    """`otc NAME COMMAND ...`: the group's parser, its subcommands required."""
    group = parts.add_parser(name, help=help_text, description=description)
    sub = group.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    return sub


def home(p: argparse.ArgumentParser, help_text: str = "the device's state directory") -> None:
    """A command that runs on the device: --home (required) and its --pin-file."""
    p.add_argument("--home", required=True, type=Path, help=help_text)
    p.add_argument("--pin-file", type=Path, help=PIN_FILE_HELP)


def home_or_device(p: argparse.ArgumentParser, device: str = "the device",
                   on_device: str = "(its owner confirms on its screen)") -> None:
    """A command that runs on the device (--home) or from the laptop paired with it (--device)."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--home", type=Path, help=f"{device}'s state directory (run on the device)")
    where.add_argument("--device", metavar="NAME|URL",
                       help=f"{device} this laptop is paired with {on_device}; with neither --home nor "
                       "--device, the one `otc client` remembers")
    p.add_argument("--pin-file", type=Path, help=f"{PIN_FILE_HELP} (with --home)")


def device_and_relay(p: argparse.ArgumentParser) -> None:
    """A laptop command that works through the paired device and a relay (both remembered)."""
    p.add_argument("--device", metavar="NAME|URL",
                   help="the paired device's name or URL, e.g. http://10.77.0.1:8470 (default: the one remembered)")
    p.add_argument("--relay", metavar="URL",
                   help="the relay, e.g. https://relay.example:8080 (remembered; default: the last one given)")
