"""The statistics behind insights, against values worked out by hand or published
tables (scipy gives the same for these inputs)."""

from __future__ import annotations

import math

import pytest

from postd_publisher.domain.stats import (
    betainc,
    bootstrap_ratio,
    confidence_word,
    holm,
    mann_whitney,
    median,
    normal_sf,
    ratio_of_medians,
    robust_outliers,
    student_t_sf,
    welch,
)


def test_normal_and_student_tails() -> None:
    assert normal_sf(0) == pytest.approx(0.5)
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)
    assert student_t_sf(0.0, 5) == pytest.approx(0.5)
    # Table values: t(0.975, 10) = 2.228, t(0.995, 30) = 2.750.
    assert student_t_sf(2.228, 10) == pytest.approx(0.025, abs=2e-4)
    assert student_t_sf(2.750, 30) == pytest.approx(0.005, abs=1e-4)
    assert student_t_sf(-2.228, 10) == pytest.approx(0.975, abs=2e-4)
    # A binomial sum: I_0.4(2, 3) = P(Binomial(4, 0.4) >= 2) = 0.5248.
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-9)


def test_mann_whitney_on_separated_and_identical_groups() -> None:
    low, high = [float(v) for v in range(1, 11)], [float(v) for v in range(11, 21)]
    test = mann_whitney(low, high)
    assert test.u == 0
    assert test.z < 0
    assert test.p_value == pytest.approx(0.000183, abs=2e-6)
    same = mann_whitney([5.0] * 12, [5.0] * 12)  # every value tied: nothing to say
    assert same.p_value == 1.0
    mixed = mann_whitney([1.0, 3.0, 5.0, 7.0, 9.0] * 2, [2.0, 4.0, 6.0, 8.0, 10.0] * 2)
    assert mixed.p_value > 0.4  # interleaved: no difference


def test_welch_matches_the_textbook_example() -> None:
    test = welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert test.t == pytest.approx(-1.8974, abs=1e-4)
    assert test.df == pytest.approx(5.882, abs=1e-3)
    assert test.p_value == pytest.approx(0.1075, abs=2e-3)


def test_holm_keeps_the_order_and_is_monotone() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.9, 0.9, 0.9]) == [1.0, 1.0, 1.0]


def test_medians_ratios_and_bootstrap_are_deterministic() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    a = [200.0 + 10 * i for i in range(12)]
    b = [100.0 + 5 * i for i in range(12)]
    assert ratio_of_medians(a, b) == pytest.approx(2.0)
    low, high = bootstrap_ratio(a, b, resamples=500)
    assert low < 2.0 < high
    assert (low, high) == bootstrap_ratio(a, b, resamples=500)  # seeded
    assert low > 1.5
    assert high < 2.7


def test_robust_outliers_find_the_post_far_above_the_rest() -> None:
    values = [90.0, 100.0, 110.0, 95.0, 105.0, 98.0, 102.0, 97.0, 103.0, 100.0, 5000.0]
    (outlier,) = robust_outliers(values, 3.0)
    assert outlier.index == 10
    assert outlier.ratio == pytest.approx(50.0, rel=0.05)
    assert outlier.p_value < 0.05
    assert robust_outliers([100.0] * 10) == []  # no spread, no outlier
    assert robust_outliers([1.0, 2.0]) == []


def test_confidence_words() -> None:
    assert confidence_word(0.001) == "high"
    assert confidence_word(0.03) == "moderate"
    assert confidence_word(0.2) == "low"
    assert not math.isnan(mann_whitney([1.0], [2.0]).p_value)
