"""`otc` imports only the part it runs (issue 21): the command table matches the parts, and
`otc --version`, `otc --help` and `otc send --help` load no device, relay or numerics code."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from onetimechat.cli import COMMANDS, PART_MODULES, ArgumentParser
from tests.conftest import ROOT


def test_the_command_table_is_what_the_parts_register():
    registered = {}
    for module in PART_MODULES:
        parser = ArgumentParser(prog="otc")
        parts = parser.add_subparsers(dest="part", parser_class=ArgumentParser)
        importlib.import_module(module).register(parts)
        for action in parts._choices_actions:
            registered[action.dest] = (module, action.help)
    assert registered == COMMANDS


HEAVY = ("device", "relay", "provisioning", "hrng", "numpy", "flask", "waitress", "pygame", "py_arkworks_bls12381",
         "spake2", "prompt_toolkit")


def loaded_after(*argv: str) -> list[str]:
    code = (f"import json, sys\nimport onetimechat.cli as cli\ntry:\n    cli.main({list(argv)!r})\n"
            "except SystemExit:\n    pass\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("argv, allowed", [
    (("--version",), ()),
    (("--help",), ()),
    ((), ()),
    (("send", "--help"), ("device",)),  # onetimechat.package (the header a laptop reads), without numpy
])
def test_only_the_part_it_runs_is_imported(argv, allowed):
    loaded = set(loaded_after(*argv))
    heavy = {m for m in HEAVY if m in loaded} - set(allowed)
    assert heavy == set(), heavy
    if argv[:1] == ("send",):
        assert "numpy" not in loaded and "flask" not in loaded
