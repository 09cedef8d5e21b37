"""JSON from outside, with its nesting bounded (DESIGN.md: bad input gets a 4xx, never a 5xx).

Python's parser recurses once per bracket: 200,000 nested brackets raise
``RecursionError``, which no ``except ValueError`` catches, so a server
answered 500. :func:`loads` turns that into :class:`TooDeep` (a
``ValueError``) and refuses any value nested deeper than ``max_depth``, which
no message of ours comes near.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32


class TooDeep(ValueError):
    """The JSON is nested deeper than allowed."""


def loads(data: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, raising :class:`TooDeep` (a ValueError) for nesting deeper than ``max_depth``."""
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels.") from None
    check_depth(value, max_depth)
    return value


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser takes them): a number from outside is finite."""
    raise ValueError(f"{name} is not a JSON value.")


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`TooDeep` if ``value`` nests lists and objects deeper than ``max_depth`` (iteratively)."""
    if not isinstance(value, (dict, list)):
        return
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise TooDeep(f"JSON nested deeper than {max_depth} levels.")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
