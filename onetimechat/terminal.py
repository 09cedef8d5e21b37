"""Questions asked on the controlling terminal (``/dev/tty``).

A prompt goes to the terminal itself, not to stdin/stdout, so it works when
the command's output is piped or its input redirected, and a script without a
terminal gets a clear error instead of a hang. (A terminal is not seekable:
Python's ``open(path, "r+")`` refuses it, which is why the file is opened
once for reading and once for writing.)
"""

from __future__ import annotations

import os
import termios

from onetimechat.errors import UsageError

TTY = "/dev/tty"


class NoAnswer(UsageError):
    """No answer was typed (the terminal closed, or Ctrl-D)."""

    code = "no-answer"


def discard_typeahead(fd: int) -> None:
    """Throw away what was typed on the terminal ``fd`` before the question is shown: an answer is only
    ever one typed after its question (a stray "y" typed earlier must not approve the next request)."""
    try:
        termios.tcflush(fd, termios.TCIFLUSH)
    except (termios.error, OSError):  # not a terminal: nothing to flush
        pass


def ask(prompt: str, *, no_terminal: str, tty: str = TTY) -> str:
    """Show ``prompt`` on the terminal and return the line typed, without its line end.

    Raises :class:`UsageError` with ``no_terminal`` when there is no terminal,
    :class:`NoAnswer` on end of input; Ctrl-C raises KeyboardInterrupt as usual.
    """
    try:
        out = open(tty, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except OSError:
        raise UsageError(no_terminal) from None
    try:
        try:
            inp = open(tty, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        except OSError:
            raise UsageError(no_terminal) from None
        with inp:
            discard_typeahead(inp.fileno())
            out.write(prompt)
            out.flush()
            line = inp.readline()
            if not line:
                out.write("\n")
                raise NoAnswer()
            return line.rstrip("\r\n")
    finally:
        out.close()


def yes(prompt: str, *, no_terminal: str, tty: str = TTY) -> bool:
    """Ask a yes/no question (``[y/N]``); only "y" or "yes" is a yes."""
    return ask(prompt, no_terminal=no_terminal, tty=tty).strip().lower() in ("y", "yes")


def has_terminal(tty: str = TTY) -> bool:
    """Whether this process has a controlling terminal it can ask on."""
    try:
        fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True
