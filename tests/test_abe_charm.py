"""Differential test: our policy parser against Charm's own pure-Python policy tree.

Charm (charm-crypto-framework) cannot be installed here: it needs libpbc. Its
policy parser, charm/toolbox/policytree.py, is pure Python (with pyparsing),
so the test fetches the sdist with pip from the package registry at test
time, into a cache under the virtualenv, takes the three files it needs
(policytree.py, node.py, enum.py) and loads them without Charm's package
__init__ (which imports the C core). Nothing of Charm is committed here.

Where Charm accepts a fully parenthesised policy, both must agree on which
attribute sets satisfy it. Attribute names avoid '_' (Charm reads ``A_1`` as
attribute ``A`` with index 1) and the words and/or (DESIGN.md keeps them as
operators in any case); docs/abe.md lists the differences.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tarfile
import types
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.abe.errors import PolicyError
from device.abe.policy import Policy
from tests.abe_helpers import NAMES, evaluate, policy_trees, render

CHARM = "charm-crypto-framework"
CHARM_VERSION = "0.62"
FILES = ("charm/toolbox/policytree.py", "charm/toolbox/node.py", "charm/toolbox/enum.py")


def _cache_dir(config: pytest.Config) -> Path:
    venv = Path(sys.prefix)
    if sys.prefix != sys.base_prefix and venv.is_dir():
        path = venv / "otc-test-cache" / f"charm-{CHARM_VERSION}"
    else:
        path = config.cache.mkdir(f"charm-{CHARM_VERSION}")  # type: ignore[union-attr]
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_charm_sources(cache: Path) -> Path:
    """The three Charm files, from the sdist pip downloads (once) into ``cache``."""
    src = cache / "src"
    if all((src / f).is_file() for f in FILES):
        return src
    sdists = sorted(cache.glob("charm_crypto_framework-*.tar.gz"))
    if not sdists:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", f"{CHARM}=={CHARM_VERSION}", "-d", str(cache)],
            capture_output=True, text=True, timeout=600,
        )
        sdists = sorted(cache.glob("charm_crypto_framework-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            pytest.fail(f"pip could not fetch the {CHARM} {CHARM_VERSION} sdist (exit {done.returncode}): "
                        + " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:]))
    with tarfile.open(sdists[-1]) as tar:
        for member in tar.getmembers():
            rel = member.name.split("/", 1)[-1]
            if rel in FILES and member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(data)
    missing = [f for f in FILES if not (src / f).is_file()]
    if missing:
        pytest.fail(f"the {CHARM} sdist lacks {', '.join(missing)}")
    return src


@pytest.fixture(scope="module")
def charm(request):
    """Charm's PolicyParser class, loaded from the fetched sources under stub packages."""
    src = fetch_charm_sources(_cache_dir(request.config))
    names = ("charm", "charm.toolbox", "charm.toolbox.enum", "charm.toolbox.node", "charm.toolbox.policytree")
    saved = {name: sys.modules.pop(name, None) for name in names}
    for name in names[:2]:
        package = types.ModuleType(name)
        package.__path__ = [str(src / name.replace(".", "/"))]
        sys.modules[name] = package
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module("charm.toolbox.policytree")
        yield module.PolicyParser
    finally:
        for name in names:
            sys.modules.pop(name, None)
            if saved[name] is not None:
                sys.modules[name] = saved[name]


def charm_satisfied(parser_class, text: str, attributes: set[str]) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = parser_class()
        tree = parser.parse(text)
        return bool(parser.prune(tree, sorted(attributes)))


@given(policy_trees(thresholds=False, max_leaves=10), st.sets(st.sampled_from(NAMES)),
       st.sampled_from(["lower", "upper"]), st.booleans())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_both_parsers_agree_on_satisfaction(charm, tree, attributes, case, top_parens):
    text = render(tree, case, top_parens)
    ours = Policy.parse(text).satisfied_by(attributes)
    assert ours == charm_satisfied(charm, text, attributes) == evaluate(tree, attributes), text


def test_where_charm_guesses_or_drops_we_refuse(charm):
    # Charm reads "A and B or C" one way without saying so; we ask for parentheses.
    assert charm_satisfied(charm, "A and B or C", {"C"}) in (True, False)
    with pytest.raises(PolicyError):
        Policy.parse("A and B or C")
    # Charm drops what it cannot read: "2 of (A, B, C)" parses as the attribute "2".
    assert charm_satisfied(charm, "2 of (A, B, C)", {"2"})
    assert not charm_satisfied(charm, "2 of (A, B, C)", {"A", "B"})
    assert Policy.parse("2 of (A, B, C)").satisfied_by({"A", "B"})
    assert not Policy.parse("2 of (A, B, C)").satisfied_by({"2"})
