"""Access policies: a strict parser, the LSSS of a policy tree, and the prune step.

The language (DESIGN.md "Attribute-based rooms"), Charm's syntax parsed strictly::

    policy    := expr END
    expr      := term ( ("and" term)* | ("or" term)* )    # one kind of operator per level
    term      := ATTRIBUTE | "(" expr ")" | K "of" "(" expr ("," expr)* ")"
    ATTRIBUTE := [A-Za-z0-9_]+, not "and"/"or"; case-insensitive, kept upper-case

Mixing ``and`` and ``or`` without parentheses is an error, not a guess; every
error names its position. An attribute may appear more than once.

A policy is a tree of threshold gates (``and`` is n-of-n, ``or`` 1-of-n). Its
linear secret sharing scheme (a monotone span program over the scalar field of
BLS12-381) has one row per leaf, left to right:

* ``or`` hands its vector to every child;
* ``and`` shares additively (Lewko-Waters): the first child gets ``v`` minus
  one fresh column per other child, each other child just its fresh column;
* ``k of n`` (1 < k < n) is Shamir's: child x (1-based) gets ``v`` plus
  ``x, x^2, ... x^(k-1)`` in k-1 fresh columns.

The prune step picks, for a set of attributes, the fewest rows that satisfy
the policy and their reconstruction coefficients w (sum of w_i * M_i is
(1, 0, ..., 0)); in ``and``/``or`` trees every coefficient is 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache

from device.abe.errors import PolicyError

#: The order r of the BLS12-381 groups (their scalar field).
ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001

MAX_POLICY_CHARS = 4096
MAX_LEAVES = 256
MAX_DEPTH = 32
MAX_ATTRIBUTE_CHARS = 64
MAX_ATTRIBUTES = 256
KEYWORDS = ("and", "or")

_TOKEN = re.compile(r"[A-Za-z0-9_]+|[(),]|[ \t\r\n]+")
_WORD = re.compile(r"[A-Za-z0-9_]+")
INF = float("inf")


@dataclass(frozen=True)
class Leaf:
    attribute: str


@dataclass(frozen=True)
class Gate:
    k: int
    children: tuple[Node, ...]


Node = Leaf | Gate


def normalise_attribute(name: str) -> str:
    """An attribute name as stored (upper-case), or a PolicyError naming the position."""
    match = _WORD.match(name)
    if not name:
        raise PolicyError("an attribute name is empty", 0)
    if match is None or match.end() != len(name):
        pos = match.end() if match else 0
        raise PolicyError(f"unexpected character {name[pos]!r} in an attribute name "
                          "(letters, digits and _ only)", pos)
    if name.lower() in KEYWORDS:
        raise PolicyError(f"{name!r} is an operator, not an attribute name", 0)
    if len(name) > MAX_ATTRIBUTE_CHARS:
        raise PolicyError(f"an attribute name is longer than {MAX_ATTRIBUTE_CHARS} characters", MAX_ATTRIBUTE_CHARS)
    return name.upper()


def parse_attributes(text: str | Iterable[str]) -> tuple[str, ...]:
    """A set of attributes from ``A,B,C`` (or a list): normalised, unique, sorted."""
    names = text.split(",") if isinstance(text, str) else list(text)
    out = set()
    offset = 0
    for name in names:
        stripped = name.strip()
        try:
            out.add(normalise_attribute(stripped))
        except PolicyError as exc:
            lead = len(name) - len(name.lstrip())
            raise PolicyError(str(exc).split(": ", 1)[1], offset + lead + exc.position) from None
        offset += len(name) + 1
    if len(out) > MAX_ATTRIBUTES:
        raise PolicyError(f"more than {MAX_ATTRIBUTES} attributes", 0)
    return tuple(sorted(out))


# Key periods (issue 22): a key issued for period n of its authority carries the attribute PERIOD_<n> as well
# as those granted, so a ciphertext under "(policy) and PERIOD_<n>" opens only with a key of that period.
# The prefix is reserved: no granted attribute and no room policy may use it.
PERIOD_PREFIX = "PERIOD_"
_PERIOD = re.compile(r"PERIOD_([1-9][0-9]{0,8})")


def period_attribute(period: int) -> str:
    """The attribute that binds a key to its authority's period ``period`` (1, 2, ...)."""
    if not isinstance(period, int) or isinstance(period, bool) or not 0 < period < 10**9:
        raise PolicyError("a key period is a number from 1", 0)
    return f"{PERIOD_PREFIX}{period}"


def attribute_period(name: str) -> int | None:
    """The period a key attribute names, or None for an ordinary attribute."""
    match = _PERIOD.fullmatch(name)
    return int(match.group(1)) if match else None


def check_unreserved(names: Iterable[str], what: str) -> None:
    """Refuse attributes that use the reserved period prefix (granted attributes, room policies)."""
    for name in names:
        if name.upper().startswith(PERIOD_PREFIX):
            raise PolicyError(f"{PERIOD_PREFIX}... is reserved for key periods; it cannot be used in {what}", 0)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise PolicyError(f"unexpected character {text[pos]!r}", pos)
            if not m.group().isspace():
                self.tokens.append((m.group(), pos))
            pos = m.end()
        self.tokens.append(("", len(text)))  # the end
        self.i = 0
        self.leaves = 0

    def peek(self, ahead: int = 0) -> tuple[str, int]:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> tuple[str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    @staticmethod
    def describe(tok: str) -> str:
        return "the end of the policy" if tok == "" else repr(tok)

    def expect(self, want: str, why: str) -> None:
        tok, pos = self.peek()
        if tok != want:
            raise PolicyError(f"expected {want!r} {why}, found {self.describe(tok)}", pos)
        self.i += 1

    def policy(self) -> Node:
        if len(self.text) > MAX_POLICY_CHARS:
            raise PolicyError(f"the policy is longer than {MAX_POLICY_CHARS} characters", MAX_POLICY_CHARS)
        if self.peek()[0] == "":
            raise PolicyError("the policy is empty", 0)
        node = self.expr(0)
        tok, pos = self.peek()
        if tok != "":
            if tok == ")":
                raise PolicyError("unbalanced ')'", pos)
            raise PolicyError(f"expected 'and', 'or' or the end of the policy, found {self.describe(tok)}", pos)
        return node

    def expr(self, depth: int) -> Node:
        children = [self.term(depth)]
        op = None
        while self.peek()[0].lower() in KEYWORDS:
            tok, pos = self.take()
            if op is None:
                op = tok.lower()
            elif tok.lower() != op:
                raise PolicyError(f"'{tok}' after '{op}' without parentheses: mixing 'and' and 'or' "
                                  "needs parentheses to say which comes first", pos)
            children.append(self.term(depth))
        if len(children) == 1:
            return children[0]
        return Gate(len(children) if op == "and" else 1, tuple(children))

    def term(self, depth: int) -> Node:
        tok, pos = self.peek()
        if depth > MAX_DEPTH:
            raise PolicyError(f"the policy is nested more than {MAX_DEPTH} levels deep", pos)
        if tok == "(":
            self.i += 1
            node = self.expr(depth + 1)
            if self.peek()[0] == ",":
                raise PolicyError("',' outside 'k of (...)'", self.peek()[1])
            self.expect(")", f"to close the '(' at character {pos + 1}")
            return node
        if tok in ("", ")", ","):
            raise PolicyError(f"expected an attribute or '(', found {self.describe(tok)}", pos)
        if tok.lower() in KEYWORDS:
            raise PolicyError(f"expected an attribute or '(', found the operator '{tok}'", pos)
        if tok.isdigit() and self.peek(1)[0].lower() == "of":
            return self.threshold(depth)
        self.i += 1
        if len(tok) > MAX_ATTRIBUTE_CHARS:
            raise PolicyError(f"an attribute name is longer than {MAX_ATTRIBUTE_CHARS} characters", pos)
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise PolicyError(f"the policy has more than {MAX_LEAVES} attributes", pos)
        return Leaf(tok.upper())

    def threshold(self, depth: int) -> Node:
        tok, pos = self.take()
        self.take()  # "of"
        self.expect("(", "after 'of'")
        children = [self.expr(depth + 1)]
        while self.peek()[0] == ",":
            self.i += 1
            children.append(self.expr(depth + 1))
        self.expect(")", f"to close the list of '{tok} of'")
        k = int(tok) if len(tok) <= 4 else MAX_LEAVES + 1
        if k < 1:
            raise PolicyError("a threshold needs at least 1 of its parts", pos)
        if k > len(children):
            raise PolicyError(f"'{tok} of' a list of {len(children)} can never be met", pos)
        return children[0] if len(children) == 1 else Gate(k, tuple(children))


def _canonical(node: Node, top: bool = False) -> str:
    if isinstance(node, Leaf):
        return node.attribute
    n = len(node.children)
    parts = [_canonical(c) for c in node.children]
    if node.k == 1 or node.k == n:
        inner = (" or " if node.k == 1 else " and ").join(parts)
        return inner if top else f"({inner})"
    return f"{node.k} of ({', '.join(parts)})"


class Policy:
    """A parsed policy: its tree, canonical text, LSSS rows and prune step."""

    def __init__(self, root: Node) -> None:
        self.root = root
        leaves: list[str] = []
        self._walk(root, leaves)
        #: The attribute of each LSSS row, left to right.
        self.rows: tuple[str, ...] = tuple(leaves)

    @classmethod
    def parse(cls, text: str) -> Policy:
        if not isinstance(text, str):
            raise PolicyError("the policy is not text", 0)
        return cls(_Parser(text).policy())

    def _walk(self, node: Node, leaves: list[str]) -> None:
        if isinstance(node, Leaf):
            leaves.append(node.attribute)
        else:
            for child in node.children:
                self._walk(child, leaves)

    @cached_property
    def text(self) -> str:
        """The canonical text: parsing it gives the same tree."""
        return _canonical(self.root, top=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Policy({self.text!r})"

    # -- satisfaction -------------------------------------------------------------------

    def satisfied_by(self, attributes: Iterable[str]) -> bool:
        return self.prune(attributes) is not None

    # -- the LSSS -------------------------------------------------------------------------

    @cached_property
    def matrix(self) -> tuple[tuple[dict[int, int], ...], int]:
        """(rows as sparse {column: value mod r}, number of columns)."""
        rows: list[dict[int, int]] = []
        width = [1]

        def build(node: Node, vec: dict[int, int]) -> None:
            if isinstance(node, Leaf):
                rows.append(vec)
                return
            n, k = len(node.children), node.k
            if k == 1:
                for child in node.children:
                    build(child, vec)
            elif k == n:
                cols = list(range(width[0], width[0] + n - 1))
                width[0] += n - 1
                build(node.children[0], {**vec, **{c: ORDER - 1 for c in cols}})
                for col, child in zip(cols, node.children[1:]):
                    build(child, {col: 1})
            else:
                cols = list(range(width[0], width[0] + k - 1))
                width[0] += k - 1
                for x, child in enumerate(node.children, start=1):
                    build(child, {**vec, **{c: pow(x, m, ORDER) for m, c in enumerate(cols, start=1)}})

        build(self.root, {0: 1})
        return tuple(rows), width[0]

    @property
    def kernel(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """A basis of the vectors u with u^T M = 0 (mod r), each sparse ((row, value) pairs, values non-zero):
        the relations every honest row of shares keeps. Empty when M has independent rows ("A and B").

        Shares made by :meth:`shares` are M . y, so sum u_i lambda_i = 0 for each u here; a ciphertext whose
        rows break one is inconsistent: different satisfying sets of attributes would recover different
        secrets (scheme.check_consistent refuses it for every member alike). Computed once per canonical text
        in this process (:func:`relations`), not per Policy object: every ciphertext decoded from outside
        parses a new one (an outside review, issue 22).
        """
        return relations(self.text).kernel

    @property
    def reconstruction(self) -> tuple[tuple[int, int], ...]:
        """A fixed w* with sum w*_i M_i = (1, 0, ..., 0), sparse: the coefficients of the fewest rows that
        satisfy the policy when every attribute is held. So sum w*_i lambda_i is the shared secret, for honest
        shares; scheme.check_consistent checks it against C0."""
        return relations(self.text).reconstruction

    def _kernel(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        rows, width = self.matrix
        n = len(rows)
        # Solve M^T u = 0: Gauss-Jordan over the width x n matrix M^T, mod r.
        a = [[rows[j].get(c, 0) % ORDER for j in range(n)] for c in range(width)]
        pivots: list[int] = []
        r = 0
        for col in range(n):
            pivot = next((i for i in range(r, width) if a[i][col]), None)
            if pivot is None:
                continue
            a[r], a[pivot] = a[pivot], a[r]
            inv = pow(a[r][col], ORDER - 2, ORDER)
            a[r] = [x * inv % ORDER for x in a[r]]
            for i in range(width):
                if i != r and a[i][col]:
                    f = a[i][col]
                    a[i] = [(x - f * y) % ORDER for x, y in zip(a[i], a[r])]
            pivots.append(col)
            r += 1
            if r == width:
                break
        basis = []
        for free in (c for c in range(n) if c not in pivots):
            u = {free: 1}
            for i, col in enumerate(pivots):
                if a[i][free]:
                    u[col] = (-a[i][free]) % ORDER
            basis.append(tuple(sorted(u.items())))
        return tuple(basis)

    def shares(self, secret: int, random_scalar: Callable[[], int]) -> list[int]:
        """One share of ``secret`` per row: M_i . (secret, y_2, ..., y_d) with fresh random y."""
        rows, width = self.matrix
        y = [secret % ORDER] + [random_scalar() for _ in range(width - 1)]
        return [sum(v * y[c] for c, v in row.items()) % ORDER for row in rows]

    # -- the prune step ---------------------------------------------------------------------

    def prune(self, attributes: Iterable[str]) -> dict[int, int] | None:
        """The fewest rows ``attributes`` can use, with their coefficients; None if unsatisfied."""
        have = set(attributes)
        costs: dict[int, float] = {}
        counter = [0]
        first_row: dict[int, int] = {}

        def cost(node: Node) -> float:
            if isinstance(node, Leaf):
                first_row[id(node)] = counter[0]
                counter[0] += 1
                c: float = 1 if node.attribute in have else INF
            else:
                first_row[id(node)] = counter[0]
                sub = sorted(cost(child) for child in node.children)
                c = sum(sub[: node.k])
            costs[id(node)] = c
            return c

        if cost(self.root) == INF:
            return None
        out: dict[int, int] = {}

        def assign(node: Node, m: int) -> None:
            if isinstance(node, Leaf):
                out[first_row[id(node)]] = m
                return
            ranked = sorted(range(len(node.children)), key=lambda j: (costs[id(node.children[j])], j))
            chosen = sorted(ranked[: node.k])
            if node.k == 1 or node.k == len(node.children):
                for j in chosen:
                    assign(node.children[j], m)
                return
            xs = [j + 1 for j in chosen]
            for j, xj in zip(chosen, xs):
                num = den = 1
                for xi in xs:
                    if xi != xj:
                        num = num * xi % ORDER
                        den = den * (xi - xj) % ORDER
                assign(node.children[j], m * num * pow(den, -1, ORDER) % ORDER)

        assign(self.root, 1)
        return out


@dataclass(frozen=True)
class Relations:
    """What a consistency check needs of a policy's share matrix M (scheme.check_consistent)."""

    kernel: tuple[tuple[tuple[int, int], ...], ...]
    reconstruction: tuple[tuple[int, int], ...]


#: How many policies' relations a process keeps: a device checks ciphertexts under its rooms' policies (each
#: also with a period attribute), and a ciphertext reaches the check only under a policy one of its keys satisfies.
RELATIONS_CACHED = 64


@lru_cache(maxsize=RELATIONS_CACHED)
def relations(text: str) -> Relations:
    """The kernel basis and reconstruction vector of the canonical policy ``text``, computed once per process
    (Gauss-Jordan over the scalar field in Python: 2.4 to 4 s for "255 of (256 attributes)" on the shared
    machine, a millisecond or less up to 20 attributes; bench/bench_abe.py) and kept in a bounded LRU."""
    policy = Policy.parse(text)
    if policy.text != text:
        raise PolicyError("the policy text is not canonical", 0)
    coefficients = policy.prune(policy.rows)
    assert coefficients is not None  # every attribute held satisfies every policy
    return Relations(kernel=policy._kernel(), reconstruction=tuple(sorted(coefficients.items())))
