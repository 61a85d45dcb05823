"""Metrics: bootstrap intervals cover known rates at the stated level, the Rogan-Gladen correction undoes
simulated detector errors, paired tests, and the stratified limit."""

import numpy as np
import pytest

from refusalkit.data.records import Example
from refusalkit.errors import RefusalkitError
from refusalkit.evaluate.benchsets import stratified_limit
from refusalkit.evaluate.metrics import ErrorRates, group_metrics, mcnemar_exact, paired_difference, rate, rogan_gladen


def _coverage(p_true: float, n: int, reps: int, level: float, seed: int) -> float:
    """Share of ``reps`` simulated data sets (n draws at rate ``p_true``) whose bootstrap interval at
    ``level`` contains ``p_true``."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(reps):
        x = rng.random(n) < p_true
        ci = rate(x, n_boot=800, seed=i, level=level)["ci"]
        hits += ci[0] <= p_true <= ci[1]
    return hits / reps


def test_bootstrap_interval_covers_true_rate_at_stated_level():
    cover = _coverage(0.3, 200, 600, 0.95, seed=123)
    # 600 replications: the coverage estimate has sd ~0.009; percentile intervals are a touch narrow.
    assert 0.92 <= cover <= 0.98, cover


def test_interval_level_is_respected():
    cover = _coverage(0.15, 300, 400, 0.80, seed=7)
    assert 0.74 <= cover <= 0.86, cover


def test_rogan_gladen_corrects_simulated_detector_errors_and_covers():
    rng = np.random.default_rng(5)
    p_true, sens, spec, n, m = 0.2, 0.85, 0.9, 400, 300
    hits, estimates, observed = 0, [], []
    reps = 200
    for i in range(reps):
        truth = rng.random(n) < p_true
        said = np.where(truth, rng.random(n) < sens, rng.random(n) >= spec)
        # the detector's error rates were themselves measured on a validation set of m + m responses
        s_hat = (rng.random(m) < sens).mean()
        c_hat = (rng.random(m) < spec).mean()
        labels = ["full_refusal" if s else "full_compliance" for s in said]
        g = group_metrics(labels, errors=ErrorRates(s_hat, c_hat, n_pos=m, n_neg=m), n_boot=800, seed=i)
        c = g["corrected_refusal"]
        hits += c["ci"][0] <= p_true <= c["ci"][1]
        estimates.append(c["rate"])
        observed.append(g["refusal"]["rate"])
    # the raw rate is biased (0.2*0.85 + 0.8*0.1 = 0.25); the corrected one is not
    assert abs(np.mean(observed) - 0.25) < 0.01
    assert abs(np.mean(estimates) - p_true) < 0.01
    assert hits / reps >= 0.9, hits / reps


def test_rogan_gladen_formula_and_clipping():
    assert rogan_gladen(0.25, 0.85, 0.9) == pytest.approx(0.2)
    assert rogan_gladen(0.01, 0.9, 0.9) == 0.0
    assert rogan_gladen(0.99, 0.9, 0.9) == 1.0
    with pytest.raises(RefusalkitError, match="no better than chance"):
        ErrorRates(0.5, 0.4)


def test_group_metrics_separates_partial_and_redirection():
    labels = ["full_refusal"] * 3 + ["partial_refusal"] * 2 + ["redirection"] + ["full_compliance"] * 4
    g = group_metrics(labels, n_boot=200)
    assert g["n"] == 10
    assert g["refusal"]["k"] == 6 and g["full_refusal"]["k"] == 3
    assert g["partial_refusal"]["k"] == 2 and g["redirection"]["k"] == 1
    assert g["corrected_refusal"] is None
    lo, hi = g["refusal"]["ci"]
    assert lo <= 0.6 <= hi
    with pytest.raises(RefusalkitError, match="unknown verdict"):
        group_metrics(["maybe"])


def test_paired_difference_and_mcnemar():
    a = [True] * 30 + [False] * 70
    b = [True] * 30 + [True] * 20 + [False] * 50   # B refuses 20 more of the same prompts
    d = paired_difference(a, b, n_boot=1000)
    assert d["diff"] == pytest.approx(0.2)
    assert d["ci"][0] > 0.1 and d["ci"][1] < 0.3
    assert d["only_b"] == 20 and d["only_a"] == 0 and d["p_value"] < 1e-4
    same = mcnemar_exact(a, a)
    assert same["p_value"] == 1.0


def test_stratified_limit_covers_every_stratum_and_is_seeded():
    exs = [Example(id=f"{c}-{e}-{i}", prompt="p", category=c, expected=e, source="s")
           for c in "abcdef" for e in ("refuse", "comply") for i in range(10)]
    pick = stratified_limit(exs, 24, seed=1)
    assert len(pick) == 24
    strata = {(x.category, x.expected) for x in pick}
    assert len(strata) == 12  # every (category, expected) appears, twice each
    assert [x.id for x in pick] == [x.id for x in stratified_limit(exs, 24, seed=1)]
    assert [x.id for x in pick] != [x.id for x in stratified_limit(exs, 24, seed=2)]
    order = [exs.index(x) for x in pick]
    assert order == sorted(order)


def test_error_rates_come_from_the_model_card_or_the_command_line():
    from refusalkit.evaluate.judge import detector_error_rates

    class Carded:
        name = "carded"
        card = {"metrics": {"sensitivity": 0.81, "specificity": 0.96, "n_pos": 100, "n_neg": 156,
                            "protocol": "held-out split"}}

    er = detector_error_rates(Carded())
    assert (er.sensitivity, er.specificity, er.n_pos, er.n_neg) == (0.81, 0.96, 100, 156)
    assert "held-out split" in er.source
    assert detector_error_rates(Carded(), 0.9, 0.8).source == "command line"
    assert detector_error_rates(type("NoCard", (), {"name": "x", "card": {"kind": "rules"}})()) is None
    with pytest.raises(RefusalkitError, match="both --sens and --spec"):
        detector_error_rates(Carded(), 0.9, None)
