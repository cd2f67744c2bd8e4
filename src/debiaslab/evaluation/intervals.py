"""Confidence intervals over training seeds and test examples, paired differences, and rank tests across settings.

A results table claims something about a method: its expected score over training seeds and over test sets drawn
like ours, not the score of three particular runs. Two things vary, and the interval counts both:

- **seeds**: the runs' scores spread from seed to seed; their variance over ``S`` seeds, divided by ``S``, is
  what resampling the seeds gives (the plug-in bootstrap's ``(S − 1) / S`` shrinkage undone);
- **test examples**: every run records its per-group counts on the test split (``n`` and ``correct`` per class x
  attribute group). Resampling a group's examples with replacement is drawing ``correct*`` from its counts
  (multinomially). All seeds of a method were scored on the same test set, so one draw serves every seed; with
  counts only (not which examples each seed got right), the seeds are coupled as if they erred on the same
  examples (nested sets of correct examples), the coupling under which the shared test-set noise is largest, so
  the interval errs on the wide side. For unbiased and conflicting accuracy (means of group accuracies) the
  variance of this bootstrap is computed exactly; for worst-group accuracy from :data:`N_BOOT` resamples.

The interval is ``mean ± sqrt((t · SE_seeds)² + (z · SE_test)²)``: Student's ``t`` with ``S − 1`` degrees of
freedom for the part estimated from ``S`` seeds, the normal ``z`` for the test part (known from the counts). A
percentile bootstrap over three seeds cannot reach 95 %: its interval is about the range of the three values,
which holds their mean three times in four. ``tests/test_intervals.py`` checks the coverage on simulated runs
with a known answer: about 95 % when the seeds' spread dominates, more when the test set dominates and seeds
disagree on its examples (the coupling above then overstates the shared noise). One seed has no spread to
estimate: its interval is undefined (NaN).

A paired difference (a method against ERM, a tuned row against its preset) pairs the runs of the same seed, scored
on the same test set: the seed part is the variance of the per-seed differences over ``S``, the test part the sum
of the two sides' (drawn independently: no coupling of their errors is assumed, which errs wide when they err on
the same examples).

The rank test across benchmark settings is Friedman's, with the Nemenyi critical difference of average ranks
(Demšar, JMLR 2006), as BiasBed ranks debiasing methods. Results depend only on the inputs (fixed random seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from debiaslab.errors import ConfigError

#: the metrics computed from per-group counts
COUNT_METRICS = ("unbiased", "worst_group", "conflicting")
N_BOOT = 2000
LEVEL = 0.95
SEED = 0
#: how a page names the intervals
METHOD = (
    "mean ± √((t·SE_seeds)² + (1.96·SE_test)²), SE_seeds from the spread of the n seeds (t with n − 1 degrees of "
    "freedom), SE_test from a bootstrap of the test examples within each group, shared by the seeds (exact for "
    f"unbiased and conflicting accuracy, {N_BOOT} resamples for worst-group)"
)
#: a group farther than this many standard errors above a seed's worst group never becomes its worst in a resample
_WORST_MARGIN = 4.0


@dataclass(frozen=True)
class GroupCounts:
    """One run's test split by group: examples ``n``, correctly classified ``correct`` and whether the group is
    bias-aligned (``aligned``), as 1-D arrays of the same length."""

    n: np.ndarray
    correct: np.ndarray
    aligned: np.ndarray

    @classmethod
    def from_groups(cls, groups: Sequence[Mapping]) -> GroupCounts:
        """From an evaluation report's ``groups`` rows (``{"n", "correct", "aligned", ...}``)."""
        if not groups:
            raise ConfigError("no groups to count: expected rows with 'n', 'correct' and 'aligned'")
        try:
            n = np.array([int(g["n"]) for g in groups])
            correct = np.array([int(g["correct"]) for g in groups])
            aligned = np.array([bool(g["aligned"]) for g in groups])
        except KeyError as exc:
            raise ConfigError(f"a group row lacks {exc.args[0]!r}; expected 'n', 'correct' and 'aligned'") from None
        return cls(n, correct, aligned)

    def __post_init__(self) -> None:
        if not (self.n.shape == self.correct.shape == self.aligned.shape) or self.n.ndim != 1:
            shapes = f"{self.n.shape}, {self.correct.shape}, {self.aligned.shape}"
            raise ConfigError(f"group counts of unequal shapes {shapes}; expected one value per group in each")
        if (self.correct < 0).any() or (self.correct > self.n).any():
            raise ConfigError("group counts with correct < 0 or correct > n; expected 0 <= correct <= n")

    def same_groups(self, other: GroupCounts) -> bool:
        return bool(np.array_equal(self.n, other.n) and np.array_equal(self.aligned, other.aligned))


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds with its two-sided interval (NaN bounds: not estimable, e.g. one seed).
    ``examples``: whether the test examples' sampling is in it (False: the seeds' values alone were known)."""

    estimate: float
    low: float
    high: float
    n: int
    examples: bool = True

    @property
    def half_width(self) -> float:
        """The interval's reach from the estimate (the larger side: a bound at 0 or 1 cuts the other)."""
        return max(self.high - self.estimate, self.estimate - self.low)

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def bracket(self, scale: float = 100.0, digits: int = 1, show_n: bool = True) -> str:
        """``84.1 [82.3, 85.9]``; ``84.1 (n=1)`` without an interval (``show_n=False``: ``84.1``)."""
        return self._text(scale, digits, show_n, lambda number: f"[{number(self.low)}, {number(self.high)}]")

    def plus_minus(self, scale: float = 100.0, digits: int = 1, show_n: bool = True) -> str:
        """``84.1 ± 1.8`` (the interval's half-width); ``84.1 (n=1)`` without an interval."""
        return self._text(scale, digits, show_n, lambda number: f"± {number(self.half_width)}")

    def _text(self, scale: float, digits: int, show_n: bool, interval: Callable[[Callable[[float], str]], str]) -> str:
        """The estimate, then ``interval`` (given how one number is written) where there is one."""

        def number(value: float) -> str:
            return f"{scale * value:.{digits}f}"

        if math.isnan(self.estimate):
            return "n/a"
        if not self.defined:
            return f"{number(self.estimate)} (n={self.n})" if show_n else number(self.estimate)
        return f"{number(self.estimate)} {interval(number)}"


@dataclass(frozen=True)
class Difference(Interval):
    """A paired difference (method − reference) over the ``n`` seeds both have; ``better``: seeds where it is
    above 0."""

    better: int = 0

    @property
    def sign(self) -> int:
        """+1 / −1 when the interval lies above / below 0; 0 when it holds 0 or is not estimable."""
        if not self.defined:
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


@dataclass(frozen=True)
class SeedScores:
    """A row's per-seed scores of one metric and the variance its mean gets from the test examples' sampling
    (``None``: unknown, the runs recorded no per-group counts)."""

    values: tuple[float, ...]
    test_variance: float | None


# ---------------------------------------------------------------------------------------------- metrics
def metrics_from_counts(n: np.ndarray, correct: np.ndarray, aligned: np.ndarray) -> dict[str, np.ndarray]:
    """Unbiased (mean group accuracy), worst-group and conflicting (mean over bias-conflicting groups) accuracy
    over the last axis, as :func:`debiaslab.evaluation.evaluate_predictions` defines them; empty groups skipped."""
    n = np.asarray(n)
    present = n > 0
    shape = np.broadcast_shapes(np.shape(correct), n.shape)
    acc = np.divide(correct, n, out=np.full(shape, np.nan), where=present)[..., present]
    aligned = np.asarray(aligned, dtype=bool)[present]
    nan = np.full(shape[:-1], np.nan)
    if acc.shape[-1] == 0:
        return {"unbiased": nan, "worst_group": nan, "conflicting": nan}
    conflicting = acc[..., ~aligned].mean(axis=-1) if aligned.any() and (~aligned).any() else nan
    return {"unbiased": acc.mean(axis=-1), "worst_group": acc.min(axis=-1), "conflicting": conflicting}


def _stack(runs: Sequence[GroupCounts]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    first = runs[0]
    for r in runs[1:]:
        if not r.same_groups(first):
            raise ConfigError("runs with different test groups cannot be pooled: their group sizes differ")
    return first.n, np.stack([r.correct for r in runs]), first.aligned


def _bins(n: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nested coupling of S seeds per group: bin k holds the examples right for the seeds ranked k.. S
    (ranked by count); returns the bins' probabilities ``(S + 1, G)`` (the last: wrong for all) and each seed's
    rank ``(S, G)``."""
    order = np.argsort(correct, axis=0, kind="stable")
    ranked = np.take_along_axis(correct, order, axis=0).astype(float)
    widths = np.diff(ranked, axis=0, prepend=0.0)
    nz = np.where(n > 0, n, 1).astype(float)
    probs = np.concatenate([widths, (n - ranked[-1])[None]], axis=0) / nz
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(correct.shape[0])[:, None].repeat(correct.shape[1], 1), axis=0)
    return probs, rank


def _mean_accuracy_variance(n: np.ndarray, correct: np.ndarray, weights: np.ndarray) -> float:
    """Exact variance of ``sum_g weights_g * mean_s correct*_sg / n_g`` when each group's examples are resampled
    once for all seeds (nested coupling): a linear function of one multinomial draw per group."""
    s = correct.shape[0]
    probs, _ = _bins(n, correct)
    # examples of bin k are right for the seeds ranked >= k: (S - k) of S seeds; the last bin for none
    a = np.append((s - np.arange(s)) / s, 0.0)[:, None]
    mean = (a * probs).sum(0)
    var_one = (a**2 * probs).sum(0) - mean**2  # one example's variance
    with np.errstate(divide="ignore", invalid="ignore"):
        per_group = np.where(n > 0, var_one / n, 0.0)
    return float((weights**2 * per_group).sum())


def _worst_group_variance(n: np.ndarray, correct: np.ndarray, rng: np.random.Generator, n_boot: int) -> float:
    """Variance of the mean over seeds of the worst group's accuracy, resampling each group's examples once for
    all seeds (nested coupling), from ``n_boot`` resamples of the groups that can be a seed's worst."""
    present = n > 0
    n, correct = n[present], correct[:, present]
    acc = correct / n
    p = np.clip(acc, 1 / n, 1 - 1 / n)
    se = np.sqrt(p * (1 - p) / n)
    worst = acc.argmin(axis=1)
    rows = np.arange(acc.shape[0])
    reach = acc - acc[rows, worst][:, None] <= _WORST_MARGIN * np.sqrt(se**2 + se[rows, worst][:, None] ** 2)
    keep = reach.any(axis=0)
    n, correct = n[keep], correct[:, keep]
    probs, rank = _bins(n, correct)
    s = correct.shape[0]
    left = np.broadcast_to(n, (n_boot, n.size)).astype(np.int64)
    left_p = np.ones(n.size)
    right = np.empty((n_boot, s, n.size))  # right[:, k]: examples drawn from bins 0..k
    total = np.zeros((n_boot, n.size))
    for k in range(s):  # sequential binomials: one multinomial draw over the bins per group and resample
        q = np.divide(probs[k], left_p, out=np.zeros_like(left_p), where=left_p > 1e-12)
        x = rng.binomial(left, np.clip(q, 0.0, 1.0))
        left = left - x
        left_p = left_p - probs[k]
        total += x
        right[:, k] = total
    # the seed ranked r is right on the examples of bins 0..r
    seed_counts = np.take_along_axis(right, np.broadcast_to(rank, (n_boot, s, n.size)), axis=1)
    per_seed = (seed_counts / n).min(axis=-1)
    return float(np.var(per_seed.mean(axis=1), ddof=1))


def seed_scores(
    runs: Sequence[GroupCounts],
    metrics: Sequence[str] = COUNT_METRICS,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> dict[str, SeedScores]:
    """``{metric: SeedScores}`` of ``runs`` (one per seed, the same test groups)."""
    _check(metrics, n_boot)
    if not runs:
        raise ConfigError("no runs to summarise: expected one per seed")
    n, correct, aligned = _stack(runs)
    observed = metrics_from_counts(n, correct, aligned)
    present = n > 0
    out = {}
    for m in metrics:
        values = tuple(float(v) for v in observed[m])
        if any(math.isnan(v) for v in values):
            out[m] = SeedScores(values, None)
            continue
        if m == "worst_group":
            var = _worst_group_variance(n, correct, np.random.default_rng(seed), n_boot)
        else:
            mask = present & (~aligned if m == "conflicting" else True)
            var = _mean_accuracy_variance(n, correct, mask / mask.sum())
        out[m] = SeedScores(values, var)
    return out


# ---------------------------------------------------------------------------------------------- intervals
def _interval(values: np.ndarray, test_variance: float | None, level: float) -> tuple[float, float, float]:
    """``(mean, low, high)``: ``mean ± sqrt(t² var(values) / S + z² test_variance)``."""
    from scipy.stats import t as student

    s = values.size
    mean = float(values.mean()) if s else math.nan
    if s < 2 or math.isnan(mean):
        return mean, math.nan, math.nan
    seed_var = float(values.var(ddof=1)) / s
    test_var = test_variance or 0.0
    if seed_var + test_var <= 0:
        return mean, mean, mean
    t_seed, z = float(student.ppf(0.5 + level / 2, s - 1)), float(student.ppf(0.5 + level / 2, math.inf))
    half = math.sqrt(t_seed**2 * seed_var + z**2 * test_var)
    return mean, mean - half, mean + half


def interval(scores: SeedScores, level: float = LEVEL) -> Interval:
    """The interval of the mean of ``scores`` (accuracies) over seeds, within [0, 1]."""
    values = np.array([v for v in scores.values if not math.isnan(v)])
    mean, low, high = _interval(values, scores.test_variance, level)
    return Interval(mean, max(low, 0.0), min(high, 1.0), int(values.size), examples=scores.test_variance is not None)


def difference(scores: SeedScores, reference: SeedScores, level: float = LEVEL) -> Difference:
    """The paired difference ``scores − reference``, position by position (the same seed, the same test set)."""
    if len(scores.values) != len(reference.values):
        raise ConfigError(
            f"paired differences need runs paired one to one, got {len(scores.values)} and {len(reference.values)}"
        )
    d = np.array(scores.values) - np.array(reference.values)
    d = d[~np.isnan(d)]
    known = scores.test_variance is not None and reference.test_variance is not None
    test_var = (scores.test_variance or 0.0) + (reference.test_variance or 0.0)
    mean, low, high = _interval(d, test_var, level)
    low, high = max(low, -1.0), min(high, 1.0)
    return Difference(mean, low, high, int(d.size), examples=known, better=int((d > 0).sum()))


def seed_intervals(
    runs: Sequence[GroupCounts], metrics: Sequence[str] = COUNT_METRICS, level: float = LEVEL, **kwargs: int
) -> dict[str, Interval]:
    """``{metric: Interval}`` of the mean over ``runs`` (one per seed)."""
    return {m: interval(s, level) for m, s in seed_scores(runs, metrics, **kwargs).items()}


def paired_differences(
    runs: Sequence[GroupCounts],
    reference: Sequence[GroupCounts],
    metrics: Sequence[str] = COUNT_METRICS,
    level: float = LEVEL,
    **kwargs: int,
) -> dict[str, Difference]:
    """``{metric: Difference}`` of ``runs`` minus ``reference``, paired position by position."""
    mine, theirs = seed_scores(runs, metrics, **kwargs), seed_scores(reference, metrics, **kwargs)
    return {m: difference(mine[m], theirs[m], level) for m in metrics}


def _check(metrics: Sequence[str], n_boot: int) -> None:
    unknown = [m for m in metrics if m not in COUNT_METRICS]
    if unknown:
        raise ConfigError(f"no interval for metric {unknown[0]!r} from group counts; expected one of {COUNT_METRICS}")
    if n_boot < 2:
        raise ConfigError(f"need n_boot >= 2, got {n_boot}")


# ---------------------------------------------------------------------------------------------- ranks
@dataclass(frozen=True)
class RankTest:
    """Average ranks of k methods over N settings (1 = best), Friedman's test, the Nemenyi critical difference."""

    methods: tuple[str, ...]
    average_ranks: tuple[float, ...]
    n_settings: int
    statistic: float
    p_value: float
    critical_difference: float
    alpha: float

    def cliques(self) -> list[tuple[int, int]]:
        """Maximal runs ``(i, j)`` of methods sorted by average rank (indices into that order) whose ranks lie
        within the critical difference of each other: the bars of a critical-difference diagram."""
        ranks = sorted(self.average_ranks)
        spans: list[tuple[int, int]] = []
        for i in range(len(ranks)):
            j = i
            while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] <= self.critical_difference:
                j += 1
            if j > i and (not spans or j > spans[-1][1]):
                spans.append((i, j))
        return spans


def rank_test(scores: np.ndarray, methods: Sequence[str], alpha: float = 0.05) -> RankTest:
    """Friedman's test on ``scores`` (settings x methods, higher is better; each setting ranks the methods, ties
    averaged) and the Nemenyi critical difference ``q_alpha · sqrt(k (k + 1) / (6 N))``, ``q_alpha`` the
    studentized range quantile divided by ``sqrt(2)``."""
    from scipy.stats import friedmanchisquare, rankdata, studentized_range

    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ConfigError(f"rank test scores must be settings x methods, got shape {scores.shape}")
    n, k = scores.shape
    if k != len(methods) or k < 3 or n < 2 or np.isnan(scores).any():
        raise ConfigError(
            f"a rank test needs at least 2 settings x 3 methods with every score present, got {n} x {k} "
            f"for {len(methods)} methods"
        )
    ranks = rankdata(-scores, axis=1)
    statistic, p_value = friedmanchisquare(*scores.T)
    q = float(studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return RankTest(
        methods=tuple(methods),
        average_ranks=tuple(float(r) for r in ranks.mean(axis=0)),
        n_settings=n,
        statistic=float(statistic),
        p_value=float(p_value),
        critical_difference=q * math.sqrt(k * (k + 1) / (6 * n)),
        alpha=alpha,
    )
