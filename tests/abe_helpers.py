"""Helpers for the attribute-based tests: random policies, and points outside the subgroups."""

from __future__ import annotations

from hypothesis import strategies as st

from device.abe.group import FIELD

# Names both our parser and Charm's read the same way: no '_' (Charm's index suffix), no keywords.
NAMES = [f"A{i}" for i in range(8)] + ["STAFF", "ADMIN", "X", "7"]


def _render(tree, outer: bool) -> str:
    if isinstance(tree, str):
        return tree
    op, children = tree
    if isinstance(op, int):
        return f"{op} of (" + ", ".join(_render(c, False) for c in children) + ")"
    inner = f" {op} ".join(_render(c, False) for c in children)
    return inner if outer else f"({inner})"


def policy_trees(names=NAMES, thresholds: bool = True, max_leaves: int = 8):
    """Random policy trees as nested tuples: (op, [children]) with op 'and', 'or' or k (k of)."""
    leaves = st.sampled_from(names)

    def extend(children):
        ops = st.sampled_from(["and", "or"])
        gate = st.tuples(ops, st.lists(children, min_size=2, max_size=3))
        if thresholds:
            gate = gate | st.lists(children, min_size=2, max_size=4).flatmap(
                lambda kids: st.tuples(st.integers(1, len(kids)), st.just(kids)))
        return gate

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def render(tree, keyword_case: str = "lower", top_parens: bool = False) -> str:
    text = _render(tree, outer=not top_parens)
    if keyword_case == "upper":
        text = text.replace(" and ", " AND ").replace(" or ", " OR ")
    return text


def evaluate(tree, attributes: set[str]) -> bool:
    """The plain meaning of a tree, for comparison."""
    if isinstance(tree, str):
        return tree.upper() in attributes
    op, children = tree
    met = sum(evaluate(c, attributes) for c in children)
    need = len(children) if op == "and" else 1 if op == "or" else op
    return met >= need


def _is_square(v: int) -> bool:
    return v == 0 or pow(v, (FIELD - 1) // 2, FIELD) == 1


def g1_outside_subgroup() -> bytes:
    """A compressed G1 point on the curve but outside the order-r subgroup."""
    x = 1
    while not _is_square((x**3 + 4) % FIELD):
        x += 1
    data = bytearray(x.to_bytes(48, "big"))
    data[0] |= 0x80  # compressed
    return bytes(data)


def g2_outside_subgroup() -> bytes:
    """A compressed G2 point on the twist but outside the order-r subgroup (x = x0 + x1 u)."""
    for x0 in range(1, 100):
        x1 = 1
        # x^3 + 4(1 + u) in Fp2 = Fp[u]/(u^2 + 1)
        a = (x0**3 - 3 * x0 * x1 * x1 + 4) % FIELD
        b = (3 * x0 * x0 * x1 - x1**3 + 4) % FIELD
        if _is_square((a * a + b * b) % FIELD):
            data = bytearray(x1.to_bytes(48, "big") + x0.to_bytes(48, "big"))
            data[0] |= 0x80
            return bytes(data)
    raise AssertionError("no point found")
