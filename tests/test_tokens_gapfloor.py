"""The sampling floor of a calibration gap table: what finite calibration and test splits alone produce."""

from math import comb

import pytest

from refusalkit.tokens.gapfloor import sampling_floor


def _exact_oracle_gap(n: int, p: float) -> float:
    return sum(comb(n, k) * p ** k * (1 - p) ** (n - k) * abs(k / n - p) for k in range(n + 1))


@pytest.mark.parametrize("n,p", [(16, 0.5), (45, 0.1), (79, 0.7)])
def test_oracle_gap_matches_the_exact_binomial_expectation(n, p):
    fl = sampling_floor({"c": n}, {"c": n}, (p,), sims=40000, seed=1)
    assert fl["oracle_mean_abs_gap"] == pytest.approx(_exact_oracle_gap(n, p), abs=0.004)


def test_calibration_noise_adds_to_test_noise_and_shrinks_with_size():
    small = sampling_floor({"c": 17}, {"c": 16}, sims=8000)
    large = sampling_floor({"c": 2000}, {"c": 2000}, sims=2000)
    assert small["calibrated_mean_abs_gap"] > small["oracle_mean_abs_gap"] + 0.01
    assert large["calibrated_mean_abs_gap"] < 0.012
    # exact thresholds miss their 95% interval about 5% of the time, estimated ones more often
    assert 0.01 < small["oracle_outside_share"] < 0.09
    assert small["calibrated_outside_share"] > small["oracle_outside_share"]


def test_categories_without_calibration_prompts_get_only_the_oracle_floor():
    fl = sampling_floor({}, {"c": 30}, (0.5,), sims=500)
    assert "calibrated_mean_abs_gap" not in fl and fl["oracle_mean_abs_gap"] > 0


def test_gap_summary_averages_cells_and_counts_misses():
    from refusalkit.tokens.calibrate import gap_summary

    rows = [{"target": 0.1, "gap": 0.05, "within_ci": True}, {"target": 0.1, "gap": -0.15, "within_ci": False},
            {"target": 0.5, "gap": 0.02, "within_ci": True}]
    s = gap_summary(rows)
    assert s["mean_abs_gap"] == pytest.approx(0.22 / 3) and s["outside"] == 1 and s["n"] == 3
    assert s["per_target"] == pytest.approx({0.1: 0.1, 0.5: 0.02})
    assert gap_summary([])["mean_abs_gap"] is None
