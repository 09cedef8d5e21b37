"""One distribution, an extra per role (setup.py), each installed from the built wheel into a fresh venv.

* a plain install is the laptop client: none of the device's or the relay's stack, and it pairs with a
  device, carries its device's pairing in person to the other laptop, sends and receives, against devices
  and a relay run from the full install (the test's own);
* ``[device]`` alone serves a device; ``[relay]`` alone serves a relay;
* a command that needs an extra the install lacks says which, in one line, with a non-zero exit.

Three venvs, each from the one wheel; pip's cache keeps the installs after the first quick. The venvs'
commands run from a folder outside the repository, so nothing of the working tree is on their path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from onetimechat.cli import EXIT_MISSING_PART
from tests.conftest import PARTS, build_wheel, otc
from tests.relay_fixtures import RelayProcess
from tests.test_rpc_cli import Serving

pytestmark = pytest.mark.slow

# What each extra brings, by import name: none of it in a plain install.
DEVICE_MODULES = ("flask", "waitress", "pygame", "numpy", "py_arkworks_bls12381", "sqlcipher3", "serial")
INSTALL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    built = build_wheel(tmp_path_factory.mktemp("wheel"))
    with zipfile.ZipFile(built) as whl:
        tops = {name.split("/", 1)[0] for name in whl.namelist() if name.endswith(".py")}
    assert tops == set(PARTS)
    return built


class Venv:
    """A fresh virtual environment with the wheel installed (with ``extras``)."""

    def __init__(self, root: Path, wheel: Path, extras: str = "") -> None:
        self.root = root
        self.cwd = root / "cwd"  # outside the repository: the venv's own install only
        self.cwd.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, capture_output=True,
                       timeout=INSTALL_TIMEOUT_S)
        installed = subprocess.run(
            [str(self.bin / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"{wheel}{f'[{extras}]' if extras else ''}"],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=self.env())
        assert installed.returncode == 0, installed.stderr[-3000:]

    @property
    def bin(self) -> Path:
        return self.root / "venv" / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **extra}

    def otc(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "otc"), *args], capture_output=True, text=True, cwd=self.cwd,
                              timeout=timeout, env=self.env(**env))

    def python(self, code: str) -> str:
        result = subprocess.run([str(self.bin / "python"), "-c", code], capture_output=True, text=True,
                                cwd=self.cwd, timeout=120, env=self.env())
        assert result.returncode == 0, result.stderr
        return result.stdout

    def importable(self, names: tuple[str, ...]) -> list[str]:
        return json.loads(self.python(
            f"import importlib.util, json; print(json.dumps([n for n in {list(names)!r} "
            "if importlib.util.find_spec(n) is not None]))"))

    def import_all(self, *packages: str, skip: tuple[str, ...] = ()) -> None:
        """Import every module of ``packages`` (but ``skip``, and ``__main__``, which runs `otc`) from the venv's own
        install."""
        assert self.python(
            "import importlib, pkgutil, sys\n"
            f"skip = {skip!r}\n"
            f"for top in {packages!r}:\n"
            "    package = importlib.import_module(top)\n"
            f"    assert package.__file__.startswith({str(self.root)!r}), package.__file__\n"
            "    for m in pkgutil.walk_packages(package.__path__, top + '.'):\n"
            "        if not m.name.startswith(skip) and not m.name.endswith('.__main__'):\n"
            "            importlib.import_module(m.name)\n"
            "print('imported all')\n") == "imported all\n"


def missing_part_line(result: subprocess.CompletedProcess, command: str, extra: str) -> None:
    """``result`` is the one-line refusal of ``command`` for want of ``extra``."""
    assert result.returncode == EXIT_MISSING_PART, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ERROR: `{command}` needs the {extra} part: pipx install --force 'onetimechat[{extra}]'"]


def test_a_plain_install_is_the_laptop_client_and_chats_with_a_device_and_relay_of_the_full_install(
        wheel, tmp_path):
    plain = Venv(tmp_path / "plain", wheel)
    assert plain.importable(DEVICE_MODULES + ("psycopg", "RPi")) == []
    # Every laptop module imports without the device's or the relay's stack.
    plain.import_all("client", "onetimechat",
                     skip=("onetimechat.cli.device", "onetimechat.cli.hrng", "onetimechat.cli.relay"))
    for args in (("--help",), ("client", "--help"), ("send", "--help"), ("recv", "--help"), ("chat", "--help"),
                 ("outbox", "--help"), ("who", "--help"), ("room", "send", "--help"), ("pair", "host", "--help"),
                 ("abe", "grant", "join", "--help")):
        shown = plain.otc(*args)
        assert shown.returncode == 0 and shown.stdout.startswith("usage: otc"), (args, shown.stderr)

    # What needs the device's or the relay's part says so in one line, before it listens or waits.
    missing_part_line(plain.otc("device", "serve", "--home", str(tmp_path / "h"), "--listen", "127.0.0.1:0"),
                      "otc device serve", "device")
    missing_part_line(plain.otc("device", "--help"), "otc device", "device")
    missing_part_line(plain.otc("relay", "serve", "--listen", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path}/r.db"),
                      "otc relay serve", "relay")
    missing_part_line(plain.otc("pair", "host", "--home", str(tmp_path / "h"), "--listen", "127.0.0.1:0",
                                "--size", "1M", "--confirm", "auto", timeout=20), "otc pair host", "device")
    missing_part_line(plain.otc("abe", "encaps", "--home", str(tmp_path / "h"), "--authority", "a", "--policy", "A"),
                      "otc abe encaps", "device")

    # Two devices and a relay from the full install; the laptops are the plain install: each pairs with its
    # device, and they carry the devices' pairing in person between them (the devices confirm: auto mode).
    for name in ("alice", "bob"):
        otc("device", "init", "--home", str(tmp_path / name), "--name", name, "--no-pin", check=True)
    home_a, home_b = tmp_path / "alice", tmp_path / "bob"
    relay = RelayProcess(f"sqlite:///{tmp_path}/relay.db", log=tmp_path / "relay.log").start()
    alice, bob = Serving(home_a, "127.0.0.1:0"), None
    try:
        bob = Serving(home_b, "127.0.0.1:0")
        for name, home, serving in (("alice", home_a, alice), ("bob", home_b, bob)):
            laptop = str(tmp_path / f"{name}-laptop")
            paired = plain.otc("client", "pair", "--device", serving.url, "--name", f"{name}-laptop",
                               "--code", (home / "pairing-code").read_text().strip(), OTC_CLIENT_HOME=laptop)
            assert paired.returncode == 0, paired.stderr
            assert f"with device {name}" in paired.stdout
        host = subprocess.Popen([str(plain.bin / "otc"), "pair", "host", "--listen", "127.0.0.1:0", "--size", "64K"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=plain.cwd,
                                env=plain.env(OTC_CLIENT_HOME=str(tmp_path / "alice-laptop")))
        port = re.search(r"127\.0\.0\.1:(\d+)", host.stdout.readline())
        assert port, host.stderr.read() if host.poll() is not None else "no port"
        joined = plain.otc("pair", "join", "--connect", f"127.0.0.1:{port.group(1)}", timeout=120,
                           OTC_CLIENT_HOME=str(tmp_path / "bob-laptop"))
        hosted = host.communicate(timeout=60)
        assert host.returncode == 0 and joined.returncode == 0, (hosted[1], joined.stderr)
        assert "Paired with alice" in joined.stdout and "Paired with bob" in hosted[0]
        sent = plain.otc("send", "--relay", relay.url, "bob", "hello from a plain install",
                         OTC_CLIENT_HOME=str(tmp_path / "alice-laptop"))
        assert sent.returncode == 0, sent.stderr
        got = plain.otc("recv", "--relay", relay.url, "--wait", "10", "--json",
                        OTC_CLIENT_HOME=str(tmp_path / "bob-laptop"))
        assert got.returncode == 0, got.stderr
        messages = [json.loads(line) for line in got.stdout.splitlines() if line.startswith("{")]
        assert [m["text"] for m in messages if m.get("kind") == "text"] == ["hello from a plain install"], got.stdout
    finally:
        for serving in (alice, bob):
            if serving is not None:
                serving.stop()
        relay.stop()


def test_the_device_extra_alone_serves_a_device(wheel, tmp_path):
    device = Venv(tmp_path / "device", wheel, "device")
    assert device.importable(DEVICE_MODULES) == list(DEVICE_MODULES)
    assert device.importable(("psycopg",)) == []
    device.import_all("device", "hrng", "provisioning", "client", "onetimechat", skip=("onetimechat.cli.relay",))
    home = tmp_path / "carol"
    made = device.otc("device", "init", "--home", str(home), "--name", "carol", "--no-pin")
    assert made.returncode == 0, made.stderr
    proc = subprocess.Popen([str(device.bin / "otc"), "device", "serve", "--home", str(home), "--listen",
                             "127.0.0.1:0", "--confirm", "auto"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=device.cwd, env=device.env())
    try:
        first = proc.stdout.readline()
        match = re.search(r"serving on (http://\S+)", first)
        assert match, first + proc.stderr.read() if proc.poll() is not None else first
        health = requests.get(f"{match.group(1)}/v1/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_the_relay_extra_alone_serves_a_relay(wheel, tmp_path):
    relay = Venv(tmp_path / "relay", wheel, "relay")
    assert relay.importable(("flask", "waitress")) == ["flask", "waitress"]
    assert relay.importable(tuple(m for m in DEVICE_MODULES if m not in ("flask", "waitress"))) == []
    relay.import_all("relay", "client", "onetimechat",
                     skip=("onetimechat.cli.device", "onetimechat.cli.hrng", "onetimechat.cli.pair",
                           "onetimechat.cli.abe"))
    proc = subprocess.Popen([str(relay.bin / "otc"), "relay", "serve", "--listen", "127.0.0.1:0", "--db",
                             f"sqlite:///{tmp_path}/relay.db"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=relay.cwd, env=relay.env())
    try:
        url = None
        for _ in range(50):
            line = proc.stdout.readline()
            if not line:
                break
            if " listening on http://" in line:
                url = "http://" + line.split("http://", 1)[1].split()[0]
                break
        assert url, proc.stderr.read() if proc.poll() is not None else "no listening line"
        info = requests.get(f"{url}/v1/info", timeout=10)
        assert info.status_code == 200 and "protocol" in info.json()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    missing_part_line(relay.otc("device", "serve", "--home", str(tmp_path / "h"), "--listen", "127.0.0.1:0"),
                      "otc device serve", "device")
