"""Bootstrap intervals and the paired bootstrap test (numpy only: quick)."""

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from iqa_lightning.bootstrap import bootstrap_intervals, paired_bootstrap_pvalue


def noisy(size, noise=0.5, seed=0):
    """(scores, targets): targets uniform, scores the targets plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    targets = rng.uniform(1, 5, size)
    return targets + rng.normal(0, noise, size), targets


def reference_intervals(scores, targets, n, seed, level):
    """The same resamples as bootstrap_intervals, one scipy call per resample."""
    index = np.random.default_rng(seed).integers(0, len(scores), size=(n, len(scores)))
    srcc = [spearmanr(scores[i], targets[i])[0] for i in index]
    plcc = [pearsonr(scores[i], targets[i])[0] for i in index]
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {
        "srcc": spearmanr(scores, targets)[0],
        "plcc": pearsonr(scores, targets)[0],
        **dict(zip(("srcc_lo", "srcc_hi"), np.percentile(srcc, tails), strict=True)),
        **dict(zip(("plcc_lo", "plcc_hi"), np.percentile(plcc, tails), strict=True)),
    }


def test_interval_contains_the_point_estimate():
    scores, targets = noisy(60)
    out = bootstrap_intervals(scores, targets, n=500)
    for metric in ("srcc", "plcc"):
        assert out[f"{metric}_lo"] < out[metric] < out[f"{metric}_hi"], metric
        assert 0.5 < out[metric] < 1


def test_interval_narrows_as_images_grow():
    widths = []
    for size in (30, 300, 3000):
        out = bootstrap_intervals(*noisy(size, seed=size), n=300)
        widths.append((out["srcc_hi"] - out["srcc_lo"], out["plcc_hi"] - out["plcc_lo"]))
    for (srcc_a, plcc_a), (srcc_b, plcc_b) in zip(widths, widths[1:], strict=False):
        assert srcc_b < 0.6 * srcc_a and plcc_b < 0.6 * plcc_a, widths


def test_same_seed_same_result_other_seed_other_interval():
    scores, targets = noisy(50)
    first = bootstrap_intervals(scores, targets, n=200, seed=3)
    assert bootstrap_intervals(scores, targets, n=200, seed=3) == first
    other = bootstrap_intervals(scores, targets, n=200, seed=4)
    assert other["srcc"] == first["srcc"] and other["srcc_lo"] != first["srcc_lo"]
    a, b = noisy(50, seed=1)[0], noisy(50, seed=2)[0]
    p = paired_bootstrap_pvalue(a, b, targets, n=200, seed=3)
    assert paired_bootstrap_pvalue(a, b, targets, n=200, seed=3) == p


def test_intervals_agree_with_a_reference_loop():
    scores, targets = noisy(25, noise=1.0, seed=5)
    scores[:6] = np.round(scores[:6])  # ties: average ranks, as scipy's spearmanr
    scores[6:9] = scores[0]
    ours = bootstrap_intervals(scores, targets, n=200, seed=11, level=0.9)
    theirs = reference_intervals(scores, targets, n=200, seed=11, level=0.9)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_no_resamples_gives_point_estimates_only():
    scores, targets = noisy(40)
    out = bootstrap_intervals(scores, targets, n=0)
    assert set(out) == {"srcc", "plcc"}
    assert out["srcc"] == pytest.approx(spearmanr(scores, targets)[0], abs=1e-12)


def test_undefined_figures_are_nan():
    out = bootstrap_intervals([0.5], [3.0], n=10)
    assert all(math.isnan(v) for v in out.values()) and len(out) == 6
    out = bootstrap_intervals([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], n=10)
    assert all(math.isnan(v) for v in out.values())


def test_perfect_predictor_beats_random_scores():
    rng = np.random.default_rng(0)
    targets = rng.uniform(0, 1, 40)
    p = paired_bootstrap_pvalue(targets, rng.uniform(0, 1, 40), targets, n=1000)
    assert p < 0.01
    assert p == pytest.approx(2 / 1001)  # no resample flips the sign: the floor
    # The order of the two methods does not matter.
    assert paired_bootstrap_pvalue(rng.uniform(0, 1, 40), targets, targets) < 0.01


def test_identical_scores_give_p_one():
    scores, targets = noisy(40)
    assert paired_bootstrap_pvalue(scores, scores.copy(), targets) == 1.0
    assert paired_bootstrap_pvalue(scores, scores.copy(), targets, metric="plcc") == 1.0
    # A monotonic transform keeps every rank: the SRCC is equal on every resample.
    assert paired_bootstrap_pvalue(scores, np.exp(scores), targets) == 1.0


def test_close_methods_are_not_told_apart():
    scores, targets = noisy(40, noise=1.0)
    other = scores + np.random.default_rng(9).normal(0, 0.05, 40)
    assert paired_bootstrap_pvalue(scores, other, targets) > 0.2


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="scores has 3, targets has 2"):
        bootstrap_intervals([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="scores_b has 2"):
        paired_bootstrap_pvalue([1, 2, 3], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"targets has 1 NaN .* position 1\)"):
        bootstrap_intervals([1, 2, 3], [1, float("nan"), 3])
    with pytest.raises(ValueError, match="scores_a has 1 NaN"):
        paired_bootstrap_pvalue([float("nan"), 2, 3], [1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="metric='krcc'"):
        paired_bootstrap_pvalue([1, 2, 3], [1, 2, 3], [1, 2, 3], metric="krcc")
    with pytest.raises(ValueError, match="n=-1"):
        bootstrap_intervals([1, 2, 3], [1, 2, 3], n=-1)
    with pytest.raises(ValueError, match="level=95"):
        bootstrap_intervals([1, 2, 3], [1, 2, 3], level=95)
