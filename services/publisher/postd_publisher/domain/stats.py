"""The small statistics insights need, written out (no numpy or scipy).

Social figures are heavily skewed (a few posts reach many times the rest), so groups
are compared by rank (Mann-Whitney U) and by the ratio of their medians, with a
percentile bootstrap interval for that ratio; daily totals are compared with Welch's
t-test on log values; one post against its account by a robust z-score (median and
MAD of log values). Several comparisons at once are Holm-adjusted. Every function is
deterministic: the bootstrap draws from a seeded generator.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of nothing")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def variance(values: Sequence[float]) -> float:
    """Sample variance (n - 1)."""
    m = mean(values)
    return sum((v - m) ** 2 for v in values) / (len(values) - 1)


@dataclass(frozen=True)
class RankTest:
    u: float
    z: float
    p_value: float  # two-sided


def ranks(values: Sequence[float]) -> tuple[list[float], float]:
    """Mid-ranks of ``values`` (1-based, ties averaged) in their order, and the tie
    term sum(t^3 - t) the rank tests' variance needs. One sort."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    ties = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            out[order[k]] = rank
        size = j - i + 1
        ties += size**3 - size
        i = j + 1
    return out, ties


def mann_whitney_from_ranks(rank_sum: float, n1: int, n2: int, ties: float) -> RankTest:
    """The test from group 1's rank sum in the pooled ranking (so one ranking serves
    every split of the same pool: each 3-hour window against the other hours)."""
    u1 = rank_sum - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    mu = n1 * n2 / 2.0
    sigma2 = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if sigma2 <= 0:
        return RankTest(u1, 0.0, 1.0)
    diff = u1 - mu
    corrected = max(0.0, abs(diff) - 0.5)
    z = math.copysign(corrected / math.sqrt(sigma2), diff)
    return RankTest(u1, z, min(1.0, 2.0 * normal_sf(abs(z))))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> RankTest:
    """Mann-Whitney U of ``a`` against ``b``: normal approximation with the tie
    correction and a continuity correction (fine from about 8 per group). ``u`` counts
    pairs where ``a`` wins (ties half); z > 0 means ``a`` tends to be larger."""
    if not a or not b:
        raise ValueError("both groups need values")
    pooled, ties = ranks([*a, *b])
    return mann_whitney_from_ranks(sum(pooled[: len(a)]), len(a), len(b), ties)


# --------------------------------------------------------------------------- Student t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@dataclass(frozen=True)
class WelchTest:
    t: float
    df: float
    p_value: float  # two-sided


def welch(a: Sequence[float], b: Sequence[float]) -> WelchTest:
    """Welch's unequal-variances t-test of mean(a) against mean(b)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each group needs two values")
    va, vb = variance(a) / len(a), variance(b) / len(b)
    diff = mean(a) - mean(b)
    if va + vb == 0:
        return WelchTest(
            0.0 if diff == 0 else math.copysign(math.inf, diff), 1.0, 1.0 if diff == 0 else 0.0
        )
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return WelchTest(t, df, min(1.0, 2.0 * student_t_sf(abs(t), df)))


# --------------------------------------------------------------------------- intervals


def ratio_of_medians(a: Sequence[float], b: Sequence[float]) -> float:
    base = median(b)
    top = median(a)
    if base <= 0:
        return math.inf if top > 0 else 1.0
    return top / base


def bootstrap_ratio(
    a: Sequence[float],
    b: Sequence[float],
    *,
    statistic: Callable[[Sequence[float], Sequence[float]], float] = ratio_of_medians,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 7,
    max_size: int = 400,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(a, b)``, each group resampled on
    its own (deterministic for a seed). A group larger than ``max_size`` is first
    thinned to that many evenly spaced order statistics (its distribution kept, its
    cost bounded: a tenant with 100,000 posts gets an answer in milliseconds); the
    interval is then a little wider than the full data's, never narrower."""
    a, b = _thin(a, max_size), _thin(b, max_size)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        values.append(statistic(rng.choices(a, k=len(a)), rng.choices(b, k=len(b))))
    values.sort()
    low = values[math.floor((1 - level) / 2 * (resamples - 1))]
    high = values[math.ceil((1 + level) / 2 * (resamples - 1))]
    return low, high


def _thin(values: Sequence[float], size: int) -> Sequence[float]:
    if len(values) <= size:
        return values
    ordered = sorted(values)
    step = (len(ordered) - 1) / (size - 1)
    return [ordered[round(i * step)] for i in range(size)]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order), controlling the family-wise
    error over every comparison made at once."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Outlier:
    index: int
    z: float
    ratio: float  # value over the group's median (on the original scale)
    p_value: float  # one-sided, Bonferroni over the group


def robust_outliers(values: Sequence[float], threshold: float = 3.0) -> list[Outlier]:
    """Values far above the rest: robust z-score of log(1 + v) (median, and MAD scaled
    to a normal sigma) at or above ``threshold``."""
    if len(values) < 3:
        return []
    logs = [math.log1p(max(0.0, v)) for v in values]
    center = median(logs)
    mad = median([abs(x - center) for x in logs]) * 1.4826
    if mad <= 0:
        return []
    typical = math.expm1(center)
    found = []
    for i, x in enumerate(logs):
        z = (x - center) / mad
        if z >= threshold:
            ratio = values[i] / typical if typical > 0 else math.inf
            found.append(Outlier(i, z, ratio, min(1.0, len(values) * normal_sf(z))))
    return sorted(found, key=lambda o: -o.z)


def confidence_word(p_value: float) -> str:
    if p_value < 0.01:
        return "high"
    if p_value < 0.05:
        return "moderate"
    return "low"
