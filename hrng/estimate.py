"""Statistics over a sample of bytes for `otc hrng test`. Pure computation, no I/O.

* the most-common-value min-entropy estimate of SP 800-90B section 6.3.1;
* Pearson's chi-square statistic against uniform bytes, with its p-value by
  the Wilson-Hilferty approximation (accurate to about 1e-3 at 255 degrees of
  freedom, ample for a sanity check).

Neither proves a source good: a counter passes chi-square, and any
deterministic whitener passes both. They catch a device that is plainly
broken, and the MCV estimate tells whether the claimed min-entropy (the
health tests' ``h``) is plausible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_99 = 2.576  # SP 800-90B 6.3.1: the upper bound of a 99% confidence interval


@dataclass(frozen=True)
class MCVEstimate:
    samples: int
    p_hat: float  # the most common value's share
    p_upper: float  # its upper bound at 99% confidence
    min_entropy: float  # bits per sample: -log2(p_upper)


def byte_counts(data: bytes) -> np.ndarray:
    return np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)


def most_common_value(counts: np.ndarray) -> MCVEstimate:
    """SP 800-90B 6.3.1 from the counts of each value.

    p_hat = max count / L; p_u = min(1, p_hat + 2.576 * sqrt(p_hat (1 - p_hat) / (L - 1)));
    min-entropy = -log2(p_u).
    """
    total = int(counts.sum())
    if total < 2:
        raise ValueError("the estimate needs at least 2 samples")
    p_hat = int(counts.max()) / total
    p_upper = min(1.0, p_hat + Z_99 * math.sqrt(p_hat * (1.0 - p_hat) / (total - 1)))
    return MCVEstimate(samples=total, p_hat=p_hat, p_upper=p_upper, min_entropy=-math.log2(p_upper))


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float  # P(a uniform source gives a statistic this large or larger)


def chi_square(counts: np.ndarray) -> ChiSquare:
    """Pearson's statistic for uniform bytes: sum((observed - expected)^2 / expected)."""
    total = int(counts.sum())
    if total == 0:
        raise ValueError("the statistic needs samples")
    expected = total / len(counts)
    statistic = float(((counts - expected) ** 2).sum() / expected)
    dof = len(counts) - 1
    return ChiSquare(statistic=statistic, dof=dof, p_value=chi_square_sf(statistic, dof))


def chi_square_sf(x: float, k: int) -> float:
    """Upper tail of the chi-square distribution (Wilson-Hilferty: (x/k)^(1/3) is nearly normal)."""
    if x <= 0:
        return 1.0
    v = 2.0 / (9.0 * k)
    z = ((x / k) ** (1.0 / 3.0) - (1.0 - v)) / math.sqrt(v)
    return 0.5 * math.erfc(z / math.sqrt(2.0))
