"""`make demo`'s script: it prints the conversation and leaves no process running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_demo_prints_the_conversation_and_stops_everything():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    out, _ = proc.communicate(timeout=300)
    text = out.decode()
    assert proc.returncode == 0, text
    for line in ("bob's laptop shows  alice: Hi Bob, did the pad arrive?",
                 "alice's laptop shows  bob: It did.",
                 "✓✓ delivered",
                 "WARNING alice: replay:"):
        assert line in text, text
    assert "Traceback" not in text
    # Everything the demo started ran in its process group; none of it is left.
    deadline = time.monotonic() + 5
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, 9)
            pytest.fail("make demo left processes running")
        time.sleep(0.1)
