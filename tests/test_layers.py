"""The layers of DESIGN.md "Packaging and layers", as import-linter contracts (.importlinter).

The contracts hold on this tree, and they are not decoration: a copy of the tree with one import that
crosses a boundary (the client reaching into the device, the device into the client, provisioning into
the device service, the shared code into a part) fails them. Every module of the device and of the shared
code is placed in a layer, so a new module cannot slip between them unchecked.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("onetimechat", "device", "client", "relay", "hrng", "provisioning")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def contracts() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config


def listed(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def test_the_contracts_hold_on_this_tree():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def copy_of_tree(tmp_path_factory):
    """The parts and the contracts, copied: each test breaks one import in its own copy."""
    def make(name: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        for part in PARTS:
            shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / ".importlinter", root / ".importlinter")
        return root
    return make


@pytest.mark.parametrize(("module", "line", "broken"), [
    # The laptop client reaching into the device (what the issue names), even inside a function.
    ("client/state.py", "def _reach():\n    from device.engine import Device\n",
     "The laptop client uses the shared protocol code only"),
    # The laptop client pulling in a device-side library.
    ("client/relay.py", "import pygame\n", "The laptop client uses the shared protocol code only"),
    ("client/relay.py", "import RPi.GPIO\n", "The laptop client uses the shared protocol code only"),
    # A laptop command reaching into the device (its module is the command line's, but a laptop runs it).
    ("onetimechat/cli/messages.py", "def _reach():\n    from device.engine import Device\n",
     "The laptop's own commands"),
    ("onetimechat/cli/room.py", "import numpy\n", "The laptop's own commands"),
    # The device importing the client.
    ("device/engine.py", "import client.rpc\n", "Below the command line, nothing imports the client"),
    # The relay importing the device's storage.
    ("relay/app.py", "from device.storage.padstore import PadStore\n", "The relay uses the shared protocol code only"),
    # Provisioning reaching up into the device service (it sits below it).
    ("provisioning/ceremony.py", "from device.server import Server\n", "The device stack is layered"),
    # Storage reaching up into the device's screen.
    ("device/storage/padstore.py", "from device.ui import Console\n", "The device stack is layered"),
    # The shared code importing a part, even indirectly through the command line.
    ("onetimechat/crypto.py", "import onetimechat.cli\n", "The device stack is layered"),
])
def test_a_crossing_import_breaks_a_contract(copy_of_tree, module, line, broken):
    root = copy_of_tree(Path(module).stem)
    path = root / module
    path.write_text(path.read_text() + "\n\n" + line)
    result = lint(root)
    assert result.returncode != 0, result.stdout
    report = " ".join(result.stdout.split())
    assert "BROKEN" in report and broken in report.split("Broken contracts")[1], report


def test_every_module_of_the_device_and_the_shared_code_has_a_layer():
    config = contracts()
    layered = {name.strip() for layer in listed(config["importlinter:contract:layers"]["layers"])
               for name in layer.replace("|", ":").split(":")}
    below = set(listed(config["importlinter:contract:below-the-command-line"]["source_modules"]))
    for package in ("device", "onetimechat"):
        for child in sorted((ROOT / package).iterdir()):
            if child.name.startswith("_") or child.name == "__pycache__":
                continue
            if child.is_dir() and not (child / "__init__.py").exists():
                continue
            if child.is_file() and child.suffix != ".py":
                continue
            module = f"{package}.{child.stem}"
            assert module in layered, f"{module} is in no layer of .importlinter"
            if package == "onetimechat" and module != "onetimechat.cli":
                assert module in below, f"{module} (shared code) is missing from the below-the-command-line contract"


def test_lint_runs_the_contracts_and_mypy_over_every_module():
    makefile = (ROOT / "Makefile").read_text()
    lint_recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "lint-imports" in lint_recipe and "mypy" in lint_recipe
    assert "\ntest: lint" in makefile
    mypy_files = (ROOT / "pyproject.toml").read_text().split("[tool.mypy]", 1)[1]
    for part in PARTS:
        assert f'"{part}"' in mypy_files.split("\n[", 1)[0]
