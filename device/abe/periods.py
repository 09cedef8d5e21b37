"""Key periods (issue 22): an attribute key is issued for one period of its authority and renewed for the next.

A period is ``(number, starts, ends)``, numbered 1, 2, ... per authority. A key
issued for period n carries the attribute ``PERIOD_<n>`` besides those granted
(device/abe/policy.py), so a room contribution encapsulated under
``(policy) and PERIOD_<n>`` opens only with a key of period n: once a room's
members move to period n + 1 (renewed keys), a key of period n, kept by a
member the authority stopped renewing, opens nothing of the room any more.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from device.abe.errors import BadPeriod

DAY_S = 86400.0
DEFAULT_PERIOD_S = 30 * DAY_S  # about a month
MIN_PERIOD_S = 60.0
MAX_PERIOD_S = 400 * DAY_S
WARN_BEFORE_S = 7 * DAY_S  # a member's device warns this long before its key's period ends (or a quarter of it)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S, "w": 7 * DAY_S}
_DURATION = re.compile(r"([1-9][0-9]{0,7})([smhdw])")  # up to 8 digits: 400 days in seconds


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``2w``, ``90m``, ``3600s`` -> seconds (BadPeriod, one line, otherwise)."""
    match = _DURATION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise BadPeriod(f"A period is a number and a unit (s, m, h, d, w), e.g. 30d; not {str(text)[:20]!r}.")
    return check_period(int(match.group(1)) * _UNITS[match.group(2)])


def check_period(seconds: float) -> float:
    """A period's length in seconds, as the laptop sends it over the RPC: from a minute to 400 days."""
    if not MIN_PERIOD_S <= seconds <= MAX_PERIOD_S:
        raise BadPeriod("A period lasts from a minute to 400 days.")
    return float(seconds)


def when(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None


@dataclass(frozen=True)
class Period:
    """One period of an authority."""

    number: int
    starts: float
    ends: float

    def to_dict(self) -> dict:
        return {"period": self.number, "starts": when(self.starts), "ends": when(self.ends)}

    def running(self, now: float) -> bool:
        return self.starts <= now < self.ends


def warn_at(starts: float, ends: float) -> float:
    """When a member's device starts asking for renewal: a week before the end, or the last quarter."""
    return ends - min(WARN_BEFORE_S, (ends - starts) / 4)
