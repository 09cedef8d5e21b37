"""The README's two-terminal walkthrough, run from README.md itself.

The commands are read out of the README's code blocks, so the README and the
behaviour cannot drift apart. Only what must differ on a shared test machine
is adapted: the ports (free ones instead of 8080, 7000, 8471, 8472), the
virtual environment (the one running the tests), and terminal 2's folder
(the one terminal 1 made). Terminal 1 runs in a shell of its own; both chats
run in pseudo-terminals and are read as a person reads them (pyte).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.chat_fixtures import ChatSession
from tests.conftest import ROOT

README = ROOT / "README.md"
PORTS = ("8080", "7000", "8471", "8472")


def walkthrough() -> tuple[list[str], list[str]]:
    """The command lines of terminal 1 and terminal 2, as README.md gives them."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Chatting: the same demo in two terminals", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2, "the walkthrough's two terminals are missing from README.md"
    return [ln for ln in blocks[0].splitlines() if ln.strip()], [ln for ln in blocks[1].splitlines() if ln.strip()]


def free_port() -> str:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return str(s.getsockname()[1])


def adapt(line: str, ports: dict[str, str], folder: str | None = None) -> str:
    bindir = shlex.quote(str(Path(sys.executable).parent))
    line = line.replace(". .venv/bin/activate;", f"export PATH={bindir}:$PATH;")
    for old, new in ports.items():
        line = re.sub(rf"(?<=:){old}\b", new, line)
    if folder is not None:
        line = line.replace("D=/tmp/tmp.XXXXXXXX", f"D={shlex.quote(folder)}")
    return line


def split_chat(lines: list[str]) -> tuple[list[str], str]:
    assert "otc chat" in lines[-1], "each terminal ends in otc chat"
    return lines[:-1], lines[-1]


def chat_in_terminal(setup: list[str], chat_line: str, ports: dict[str, str], folder: str | None) -> ChatSession:
    script = "\n".join([*(adapt(ln, ports, folder) for ln in setup), adapt(chat_line, ports, folder)])
    return ChatSession(None, command=("bash", ["-c", script]))


def test_the_readme_walkthrough(tmp_path):
    term1, term2 = walkthrough()
    ports = {old: free_port() for old in PORTS}
    setup1, chat1 = split_chat(term1)
    # Terminal 1 up to its chat: in a session of its own, so everything it starts in the background is stopped.
    shell = subprocess.Popen(["bash", "-c", "set -e\n" + "\n".join(adapt(ln, ports) for ln in setup1)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        out, err = shell.communicate(timeout=240)
        folder = out.splitlines()[0].strip() if out else ""
        assert shell.returncode == 0, out + err
        assert folder.startswith(str(tmp_path)), out
        alice = chat_in_terminal([f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH",
                                  f"D={shlex.quote(folder)}"], chat1, ports, None)
        setup2, chat2 = split_chat(term2)
        bob = chat_in_terminal(setup2, chat2, ports, folder)
        try:
            alice.wait_for("connected")
            bob.wait_for("connected")
            # What the README says to type, and what it says happens.
            alice.type("bob: hello")
            bob.wait_for("alice: hello")
            alice.wait_for("me → bob: hello  ✓✓", timeout=45)
            alice.type("help")
            alice.wait_for("ms <a,b,...> <message>")
            bob.type("alice: hi alice")
            alice.wait_for("bob: hi alice")
            alice.type("exit")
            bob.type("exit")
            assert alice.close() == 0 and bob.close() == 0
            assert "Traceback" not in alice.text() + bob.text()
        finally:
            alice.close()
            bob.close()
        # The laptops remember their device and relay: `otc chat` alone works from then on.
        env = {"OTC_CLIENT_HOME": f"{folder}/bob-laptop"}
        again = ChatSession(None, command=(sys.executable, ["-m", "onetimechat.cli", "chat"]), env=env)
        try:
            again.wait_for("connected")
            again.type("alice: without --device or --relay")
            again.wait_for("me → alice: without --device or --relay  ✓")
        finally:
            again.close()
    finally:
        stop_session(shell.pid)


def stop_session(pgid: int) -> None:
    """Stop what terminal 1 left running in the background: its process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
