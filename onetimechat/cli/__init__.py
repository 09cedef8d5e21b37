"""The `otc` command: one entry point, subcommands per part.

Errors the user can act on derive from :class:`~onetimechat.errors.OTCError`
and are printed as one line, ``ERROR: <text>``, with a non-zero exit. So is a
command that needs a part this install lacks: a plain install is the laptop
client, and the device's and the relay's stacks are extras (setup.py), so
`otc device serve` there says which extra to install. Anything else is a bug:
it is reported by type only (its message could hold secrets), with the
traceback only when ``OTC_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback
from collections.abc import Sequence

# numpy's OpenBLAS otherwise starts a thread per core that spins for about half a second after
# import; otc multiplies no matrices, and on a two- or four-core device that spin takes CPU from
# the work at hand (the pairing ceremony starts right after). Set before any part imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from onetimechat import __version__  # noqa: E402
from onetimechat.errors import OTCError, UsageError  # noqa: E402
from onetimechat.text import visible  # noqa: E402

EXIT_INTERNAL = 70
EXIT_MISSING_PART = 69  # EX_UNAVAILABLE: this install lacks the part the command needs
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and a UsageError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self._command_for_help()} --help`)")

    def _command_for_help(self) -> str:
        """The deepest (sub)command named on the command line: arguments argparse could not place are reported
        by the top parser, but the help that explains them is the subcommand's (`otc send --help`)."""
        parser: argparse.ArgumentParser = self
        for word in sys.argv[1:]:
            if word.startswith("-"):
                break
            choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            if not isinstance(choices, dict) or word not in choices:
                break
            parser = choices[word]
        return parser.prog


# Each part's CLI module has register(parts), adding its subcommands.
PART_MODULES = tuple(f"onetimechat.cli.{name}" for name in
                     ("device", "client", "messages", "hrng", "relay", "pair", "abe", "room"))

# Which module registers each top-level command, with its one-line help: `otc X` imports only X's
# module, and `otc`, `otc --help` and `otc --version` import none (tests check this table against
# what the modules register).
COMMANDS: dict[str, tuple[str, str]] = {
    "device": ("onetimechat.cli.device", "the pad device's own commands"),
    "pad": ("onetimechat.cli.device", "pads between devices"),
    "client": ("onetimechat.cli.client", "this laptop's link to its device"),
    "send": ("onetimechat.cli.messages", "send a message or a file (the device asks its owner to confirm it)"),
    "recv": ("onetimechat.cli.messages", "receive waiting messages"),
    "outbox": ("onetimechat.cli.messages", "what waits for the relay: list it, retry it, or drop an item"),
    "who": ("onetimechat.cli.messages", "which contacts are online now (opt-in presence)"),
    "chat": ("onetimechat.cli.messages", "interactive chat"),
    "hrng": ("onetimechat.cli.hrng", "the hardware random source"),
    "relay": ("onetimechat.cli.relay", "the untrusted relay (a mailbox server)"),
    "pair": ("onetimechat.cli.pair", "pair two devices in person and make a pad"),
    "abe": ("onetimechat.cli.abe", "attribute-based keys on this device"),
    "room": ("onetimechat.cli.room", "attribute-based rooms"),
}


# The modules each extra of setup.py brings that a plain install (the laptop client) lacks, by the name they are
# imported under; Flask and waitress serve both the device and the relay.
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "device": frozenset({"flask", "waitress", "numpy", "pygame", "serial", "py_arkworks_bls12381", "sqlcipher3"}),
    "relay": frozenset({"flask", "waitress"}),
    "postgres": frozenset({"psycopg"}),
    "pi": frozenset({"RPi", "lgpio"}),
}
EXTRA_NAMES = {"device": "the device part", "relay": "the relay part", "postgres": "the relay's PostgreSQL storage",
               "pi": "the Raspberry Pi's GPIO"}


def missing_part(extra: str, command: str) -> str:
    """The one line that says ``command`` needs ``extra``, and how to add it to this install.

    ``--force``: pipx leaves an installed app as it is without it (the laptop has onetimechat already).
    """
    return f"`{command}` needs {EXTRA_NAMES[extra]}: pipx install --force 'onetimechat[{extra}]'"


def missing_extra(exc: ImportError, part: str | None) -> str | None:
    """The extra whose absence ``exc`` is (a module of it not installed), or None: then ``exc`` is a bug."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    if part == "relay" and top in EXTRA_MODULES["relay"]:
        return "relay"
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)


def _command_words(argv: Sequence[str], args: argparse.Namespace | None) -> str:
    """``otc PART COMMAND``: from the parsed arguments, or, if parsing needed the missing part, the first two words."""
    if args is not None:
        words = [getattr(args, dest, None) for dest in ("part", "command", "role")]
    else:
        words = []
        for arg in argv:
            if arg.startswith("-") or len(words) == 2 or (words and not re.fullmatch(r"[a-z][a-z-]*", arg)):
                break
            words.append(arg)
    return " ".join(["otc", *(str(w) for w in words if w)])


def build_parser(command: str | None = None, *, everything: bool = True) -> ArgumentParser:
    """The `otc` parser: every part (``everything``), only ``command``'s part, or none imported.

    Parts not imported get a placeholder with their help line, so `otc --help` lists them all.
    """
    parser = ArgumentParser(
        prog="otc",
        description="One Time Chat: end-to-end encrypted chat whose keys never touch the laptop.",
        epilog="Each PART has its own --help. The laptop's state (pairing keys, the remembered device and "
               "relay, the outbox) lives in $OTC_CLIENT_HOME, by default the user config folder.",
    )
    parser.add_argument("--version", action="version", version=f"otc {__version__}")
    parts = parser.add_subparsers(dest="part", metavar="PART", parser_class=ArgumentParser)
    parts.required = True
    wanted = set(PART_MODULES) if everything else {COMMANDS[command][0]} if command in COMMANDS else set()
    for name in PART_MODULES:
        if name in wanted:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if not everything or missing_extra(exc, None) is None:
                    raise
                continue  # the whole parser (shell completion): a part this install lacks keeps its placeholder
            module.register(parts)
    registered = set(parts.choices)
    for name, (_module, help_text) in COMMANDS.items():
        if name not in registered:
            parts.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args: argparse.Namespace | None = None
    try:
        if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete); otherwise not imported
            import argcomplete

            argcomplete.autocomplete(build_parser())
        first = next((arg for arg in argv if not arg.startswith("-")), None)
        parser = build_parser(first, everything=False)
        if not argv:
            parser.print_help()
            return 0
        args = parser.parse_args(argv)
        if "home" in vars(args) and "device" in vars(args) and args.home is None and args.device is None:
            # A command that runs either on the device (--home) or from its laptop (--device), given neither:
            # the laptop's remembered device (`otc client`), or a clear error when it has none.
            from client.errors import NotPaired
            from client.state import ClientState

            try:
                args.device = ClientState().resolve_device(None)
            except NotPaired as exc:
                raise UsageError(f"Give --home DIR (on the device) or --device NAME|URL (from its laptop): {exc}"
                                 ) from None
        return int(args.func(args) or 0)
    except ImportError as exc:
        extra = missing_extra(exc, args.part if args is not None else next(
            (arg for arg in argv if not arg.startswith("-")), None))
        if extra is None:
            return _internal_error(exc)
        print(f"ERROR: {missing_part(extra, _command_words(argv, args))}", file=sys.stderr)
        return EXIT_MISSING_PART
    except OTCError as exc:
        # An error's text may come from a server (a hostile relay or device): never print it raw.
        print(f"ERROR: {visible(str(exc))}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        # At a terminal the ^C the terminal echoed stays on the prompt's line; the error gets its own.
        print(("\n" if sys.stderr.isatty() else "") + "ERROR: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - last line of defence: never show secrets
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
    if os.environ.get("OTC_DEBUG") == "1":
        traceback.print_exception(exc)
    print(f"ERROR: internal error ({type(exc).__name__}); run with OTC_DEBUG=1 for details", file=sys.stderr)
    return EXIT_INTERNAL


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
