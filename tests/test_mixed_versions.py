"""A device from before package v2 cannot pair with one of today (an outside review of issue 16).

With package v1 the responder spends pad[N-32-L : N] on its first message, whose keystream covers
what v2 sets aside as the responder's authentication key R = pad[N-16:N]. A v2 device paired with a
pre-v2 one would accept forgeries made with the R that device leaked. So the ceremony's protocol name
changed with v2 (otc-pairing-v3) and the two refuse each other before any pad exists. The old side
here is the project's own code as it was before package v2, taken from git history.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, otc

BEFORE_V2 = "f8e48f5"  # the last commit with package format v1


@pytest.fixture
def old_code(tmp_path):
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BEFORE_V2}^{{commit}}"],
                      capture_output=True).returncode != 0:
        pytest.skip("this checkout has no git history to take the pre-v2 code from")
    folder = tmp_path / "old"
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_V2, "onetimechat", "device", "client",
                              "hrng", "provisioning", "relay"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def old_otc(folder, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(folder)}
    return subprocess.Popen([sys.executable, "-m", "onetimechat.cli", *args], cwd=str(folder), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            **popen)


@pytest.mark.parametrize("old_side", ["join", "host"])
def test_a_pre_v2_device_and_a_v2_device_refuse_to_pair(tmp_path, old_code, old_side):
    new_home, old_home = tmp_path / "alice", tmp_path / "bob"
    otc("device", "init", "--home", str(new_home), "--name", "alice", check=True)
    init = old_otc(old_code, "device", "init", "--home", str(old_home), "--name", "bob")
    _, err = init.communicate(timeout=60)
    assert init.returncode == 0, err
    new = [sys.executable, "-m", "onetimechat.cli"]
    if old_side == "join":
        host = subprocess.Popen([*new, "pair", "host", "--home", str(new_home), "--listen", "127.0.0.1:0",
                                 "--size", "64K", "--confirm", "auto"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        port = re.search(r"127\.0\.0\.1:(\d+)", host.stdout.readline()).group(1)
        join = old_otc(old_code, "pair", "join", "--home", str(old_home), "--connect", f"127.0.0.1:{port}",
                       "--confirm", "auto")
    else:
        host = old_otc(old_code, "pair", "host", "--home", str(old_home), "--listen", "127.0.0.1:0",
                       "--size", "64K", "--confirm", "auto")
        port = re.search(r"127\.0\.0\.1:(\d+)", host.stdout.readline()).group(1)
        join = subprocess.Popen([*new, "pair", "join", "--home", str(new_home), "--connect", f"127.0.0.1:{port}",
                                 "--confirm", "auto"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
    try:
        host_out, host_err = host.communicate(timeout=120)
        join_out, join_err = join.communicate(timeout=120)
    finally:
        for proc in (host, join):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert host.returncode != 0 and join.returncode != 0, host_out + host_err + join_out + join_err
    new_err = join_err if old_side == "host" else host_err
    # Whichever reads the other's first frame refuses it by its protocol name; the other sees the link close.
    assert "pairing protocol" in host_err + join_err, host_err + join_err
    assert [ln for ln in new_err.splitlines() if ln.startswith("ERROR: ")] and "Traceback" not in new_err
    status = otc("device", "status", "--home", str(new_home), "--json", check=True).stdout
    assert b'"contacts": []' in status  # no pad, no contact on the v2 device
