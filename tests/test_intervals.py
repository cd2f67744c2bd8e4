"""Intervals over seeds and test examples: they reproduce the recorded metrics, their test part is the variance
of resampling the examples, they cover a known answer about 95 % of the time, and the rank test matches Demšar's
tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import expit

from debiaslab.errors import ConfigError
from debiaslab.evaluation import evaluate_predictions
from debiaslab.evaluation import intervals as iv


def _counts(correct, n, aligned) -> iv.GroupCounts:
    return iv.GroupCounts(np.asarray(n), np.asarray(correct), np.asarray(aligned, dtype=bool))


def test_metrics_from_counts_are_the_evaluation_metrics() -> None:
    gen = torch.Generator().manual_seed(0)
    y, attr = torch.randint(0, 3, (600,), generator=gen), torch.randint(0, 3, (600,), generator=gen)
    logits = torch.randn(600, 3, generator=gen) + 2.0 * torch.nn.functional.one_hot(attr, 3)
    report = evaluate_predictions(logits, y, attr, n_classes=3, n_attrs=3, aligned_groups=(0, 4, 8))
    counts = iv.GroupCounts.from_groups(report.to_dict()["groups"])
    got = iv.metrics_from_counts(counts.n, counts.correct, counts.aligned)
    for metric in iv.COUNT_METRICS:
        assert float(got[metric]) == pytest.approx(report.metrics[metric], abs=1e-12)


def _nested_examples(n: int, correct: list[int]) -> np.ndarray:
    """0/1 correctness of each seed on ``n`` examples, nested: seed k is right on its first ``correct[k]``."""
    return np.array([[1] * c + [0] * (n - c) for c in correct])


def test_test_variance_is_the_variance_of_resampling_the_examples() -> None:
    """Drawing one set of examples per group for all seeds and recounting gives the variance the formula (means
    of groups) and the simulation (worst group) report."""
    n = np.array([30, 20, 25, 40])
    correct = np.array([[24, 9, 20, 39], [27, 12, 19, 40], [22, 8, 23, 38]])
    aligned = np.array([True, False, False, True])
    runs = [_counts(c, n, aligned) for c in correct]
    rng = np.random.default_rng(1)
    draws = 20000
    per_group = []
    for g in range(4):
        examples = _nested_examples(n[g], sorted(correct[:, g]))[np.argsort(np.argsort(correct[:, g]))]
        idx = rng.integers(0, n[g], (draws, n[g]))
        per_group.append(examples[:, idx].sum(-1).T / n[g])  # (draws, seeds)
    acc = np.stack(per_group, axis=-1)  # (draws, seeds, groups)
    brute = {
        "unbiased": acc.mean(-1).mean(-1).var(),
        "conflicting": acc[..., ~aligned].mean(-1).mean(-1).var(),
        "worst_group": acc.min(-1).mean(-1).var(),
    }
    scores = iv.seed_scores(runs, n_boot=20000)
    for metric, value in brute.items():
        assert scores[metric].test_variance == pytest.approx(value, rel=0.05), metric
    observed = iv.metrics_from_counts(n, correct, aligned)
    assert scores["worst_group"].values == pytest.approx(observed["worst_group"])


def _truth(a: np.ndarray, sigma: float) -> np.ndarray:
    """E[sigmoid(a + sigma Z)], Z standard normal: a group's accuracy over seeds and test sets."""
    x, w = hermegauss(60)
    return (expit(a[:, None] + sigma * x[None]) * (w / w.sum())).sum(1)


def _coverage(seed: int, tau: float, kappa: float, reps: int, shift: float | None = None) -> float:
    """How often the interval holds the true unbiased accuracy (or the true difference when ``shift``) over
    ``reps`` simulated studies: 3 seeds scored on one test set of 20 groups x 60 examples. A seed's logit offset
    is N(0, tau²) (training randomness); an example's is N(0, kappa²) and shared by every seed (hard examples
    are hard for all); ``shift`` raises a second method's logits by that much on the same examples and seeds."""
    rng = np.random.default_rng(seed)
    groups, size = 20, 60
    a = np.linspace(-1.0, 3.5, groups)
    aligned = np.arange(groups) % 10 == 0
    sigma = math.hypot(tau, kappa)
    base = _truth(a, sigma)
    target = base.mean() if shift is None else (_truth(a + shift, sigma) - base).mean()
    n = np.full(groups, size)

    def run(examples: np.ndarray, offset: float) -> iv.GroupCounts:
        p = expit(a[:, None] + offset + rng.normal(0, tau) + examples)
        return _counts((rng.random(p.shape) < p).sum(1), n, aligned)

    hits = 0
    for _ in range(reps):
        examples = rng.normal(0, kappa, (groups, size))
        runs = [run(examples, 0.0) for _ in range(3)]
        if shift is None:
            got = iv.seed_intervals(runs, ("unbiased",))["unbiased"]
        else:
            got = iv.paired_differences([run(examples, shift) for _ in range(3)], runs, ("unbiased",))["unbiased"]
        hits += got.low <= target <= got.high
    return hits / reps


def test_the_interval_covers_the_true_value_about_95_percent_of_the_time() -> None:
    # seeds spread by ~4 points, the test set's own noise ~1 point: the seeds' part dominates
    assert 0.93 <= _coverage(0, tau=0.3, kappa=1.0, reps=600) <= 0.98
    assert 0.93 <= _coverage(1, tau=0.3, kappa=1.0, reps=400, shift=0.3) <= 0.98
    # seeds nearly agree: the test part dominates and the nested coupling overstates it (wide, never narrow)
    assert _coverage(2, tau=0.02, kappa=1.0, reps=300) >= 0.95


def test_paired_differences_count_seeds_and_mark_only_intervals_that_exclude_zero() -> None:
    n, aligned = np.full(4, 200), np.array([True, False, False, False])
    ref = [_counts([190, 100 + s, 90, 80], n, aligned) for s in range(3)]
    better = [_counts([190, 150 + s, 140, 130 - s], n, aligned) for s in range(3)]
    same = [_counts([190, 101 - s, 89 + s, 80], n, aligned) for s in range(3)]
    up = iv.paired_differences(better, ref)["unbiased"]
    assert up.sign == 1 and up.better == 3 and up.n == 3 and up.low > 0
    flat = iv.paired_differences(same, ref)["unbiased"]
    assert flat.sign == 0 and flat.low < 0 < flat.high and flat.better == 1
    assert iv.paired_differences(ref, better)["conflicting"].sign == -1
    with pytest.raises(ConfigError, match="paired one to one"):
        iv.paired_differences(better[:2], ref)


def test_one_seed_has_no_interval_and_cells_say_so() -> None:
    n, aligned = np.full(2, 50), np.array([True, False])
    single = iv.seed_intervals([_counts([45, 20], n, aligned)])["unbiased"]
    assert single.estimate == pytest.approx(0.65) and not single.defined
    assert single.bracket() == "65.0 (n=1)" and single.plus_minus() == "65.0 (n=1)"
    pair = iv.seed_intervals([_counts([45, 20], n, aligned), _counts([46, 24], n, aligned)])["unbiased"]
    assert pair.bracket() == "67.5 [34.8, 100.0]"  # t with 1 degree of freedom; an accuracy stays within 0-100
    assert pair.plus_minus() == "67.5 ± 32.7"  # the side not cut by the bound
    values = iv.interval(iv.SeedScores((0.6, 0.7, 0.8), None))
    assert not values.examples and values.low == pytest.approx(0.7 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    with pytest.raises(ConfigError, match="different test groups"):
        iv.seed_intervals([_counts([45, 20], n, aligned), _counts([45, 20], np.full(2, 60), aligned)])


def test_rank_test_matches_friedman_and_demsar_critical_differences() -> None:
    from scipy.stats import friedmanchisquare

    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.85, 0.86, 0.7, 0.5], [0.9, 0.7, 0.8, 0.6], [0.95, 0.9, 0.6, 0.7]])
    test = iv.rank_test(scores, ["a", "b", "c", "d"])
    assert test.average_ranks == pytest.approx((1.25, 2.0, 3.0, 3.75))
    assert (test.statistic, test.p_value) == pytest.approx(friedmanchisquare(*scores.T))
    # Demšar (2006), Table 5: q_0.05 = 2.569 for 4 methods, 3.164 for 10
    assert test.critical_difference == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 4)), abs=1e-3)
    ten = iv.rank_test(np.random.default_rng(0).random((6, 10)), [str(i) for i in range(10)])
    assert ten.critical_difference == pytest.approx(3.164 * math.sqrt(10 * 11 / 36), abs=1e-3)
    assert test.cliques() == [(0, 2), (1, 3)]  # 1.25..3.0 within CD 2.345; 2.0..3.75 too
    with pytest.raises(ConfigError, match="at least 2 settings x 3 methods"):
        iv.rank_test(scores[:, :2], ["a", "b"])
