"""Per-group evaluation: one table of groups (class x attribute) plus the summary metrics the papers report.

Everything is computed from a few sufficient statistics (per-group / per-class / per-confidence-bin counts and
sums). The same code path serves a single evaluation (one "replicate": every example once) and the bootstrap
(many replicates of resampled indices), so a confidence interval is always about exactly the metric reported.

Metrics are fractions in [0, 1] (renderers show percent). Group metrics use only examples whose attribute is
known (``attr >= 0``); with no known attribute they are NaN. Nothing here crashes on empty groups: their row
holds NaN and summaries skip them.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from debiaslab.errors import ConfigError
from debiaslab.evaluation import tables
from debiaslab.utils.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger(__name__)

ECE_BINS = 15
CLASSDIFF_FORMS = ("binary", "mean_pairwise", "official3")
METRIC_KEYS = (
    "accuracy",
    "loss",
    "worst_group",
    "unbiased",
    "aligned",
    "conflicting",
    "aligned_samples",
    "conflicting_samples",
    "worst_class",
    "mean_class",
    "class_diff",
    "weighted_group",
    "ece",
    "n",
)
#: Metrics that need the bias attribute (NaN when it is unknown everywhere).
GROUP_METRIC_KEYS = (
    "worst_group",
    "unbiased",
    "aligned",
    "conflicting",
    "aligned_samples",
    "conflicting_samples",
    "weighted_group",
)

_NAN = float("nan")


# ---------------------------------------------------------------------------------------------- report types
@dataclass
class GroupRow:
    """One group (class ``y`` x attribute ``attr``); ``accuracy`` and ``loss`` are NaN when ``n == 0``."""

    group: int
    y: int
    attr: int
    n: int
    correct: int
    accuracy: float
    loss: float
    aligned: bool


@dataclass
class ClassRow:
    """One class over all its examples (attribute known or not)."""

    y: int
    n: int
    correct: int
    accuracy: float
    loss: float


@dataclass
class EvalReport:
    """One evaluation: per-group rows, per-class rows and summary ``metrics`` (floats in [0, 1]).

    ``metrics`` has the keys of :data:`METRIC_KEYS`; ``n`` is the number of examples.
    """

    rows: list[GroupRow]
    class_rows: list[ClassRow]
    metrics: dict[str, float]
    n_classes: int
    n_attrs: int
    classdiff_form: str = "mean_pairwise"
    class_names: list[str] | None = None
    attr_names: list[str] | None = None

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_attrs

    @property
    def has_groups(self) -> bool:
        """True when at least one group has examples (so group metrics are defined)."""
        return any(r.n > 0 for r in self.rows)

    def class_name(self, y: int) -> str:
        return self.class_names[y] if self.class_names and y < len(self.class_names) else str(y)

    def attr_name(self, a: int) -> str:
        return self.attr_names[a] if self.attr_names and a < len(self.attr_names) else str(a)

    def accuracy_matrix(self) -> list[list[float]]:
        """Group accuracies as a ``n_classes x n_attrs`` nested list (NaN for empty groups)."""
        return [[self.rows[c * self.n_attrs + a].accuracy for a in range(self.n_attrs)] for c in range(self.n_classes)]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: non-finite floats become ``None``."""
        return {
            "n_classes": self.n_classes,
            "n_attrs": self.n_attrs,
            "classdiff_form": self.classdiff_form,
            "class_names": self.class_names,
            "attr_names": self.attr_names,
            "metrics": {k: _to_json_float(v) for k, v in self.metrics.items()},
            "groups": [{k: _to_json_float(v) for k, v in asdict(r).items()} for r in self.rows],
            "classes": [{k: _to_json_float(v) for k, v in asdict(r).items()} for r in self.class_rows],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalReport:
        """Inverse of :meth:`to_dict` (``None`` floats come back as NaN)."""
        return cls(
            rows=[_row_from_dict(GroupRow, r) for r in d["groups"]],
            class_rows=[_row_from_dict(ClassRow, r) for r in d["classes"]],
            metrics={k: _from_json_float(v) for k, v in d["metrics"].items()},
            n_classes=int(d["n_classes"]),
            n_attrs=int(d["n_attrs"]),
            classdiff_form=str(d.get("classdiff_form", "mean_pairwise")),
            class_names=list(d["class_names"]) if d.get("class_names") else None,
            attr_names=list(d["attr_names"]) if d.get("attr_names") else None,
        )

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the group table (one row per group; empty cells for NaN), atomically."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(
            ["group", "y", "attr", "class_name", "attr_name", "aligned", "n", "correct", "accuracy", "loss"]
        )
        for r in self.rows:
            writer.writerow(
                [
                    r.group,
                    r.y,
                    r.attr,
                    self.class_name(r.y),
                    self.attr_name(r.attr),
                    int(r.aligned),
                    r.n,
                    r.correct,
                    _csv_float(r.accuracy),
                    _csv_float(r.loss),
                ]
            )
        atomic_write_text(path, buf.getvalue())

    # ------------------------------------------------------------------ rendering
    def render(self) -> Table:
        """The group table (class, attribute, aligned?, n, accuracy %, loss) with the summary as caption."""
        return tables.render_group_table(self)

    def render_matrix(self) -> Table:
        """Class x attribute accuracy grid: readable where a group table is not (Colored MNIST: 100 rows)."""
        return tables.render_matrix(self)

    def render_classes(self) -> Table:
        """Per-class table: what is left to show when attributes are unknown."""
        return tables.render_class_table(self)

    def render_auto(self, max_rows: int = tables.MAX_TABLE_ROWS) -> Table:
        """Group table for few groups, matrix for many, class table when no attribute is known."""
        return tables.render_auto(self, max_rows=max_rows)

    def summary_line(self) -> str:
        """One line, in percent: ``unbiased 71.3 | worst-group 40.2 | ... | acc 93.0 (%)``."""
        return tables.summary_line(self.metrics)


def _row_from_dict(cls: Any, r: Mapping[str, Any]) -> Any:
    """A :class:`GroupRow` / :class:`ClassRow` from :meth:`EvalReport.to_dict`'s dict (``None`` floats: NaN)."""
    convert = {"int": int, "bool": bool, "float": _from_json_float}
    return cls(**{f.name: convert[str(f.type)](r[f.name]) for f in fields(cls)})


def _to_json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _from_json_float(v: Any) -> float:
    return _NAN if v is None else float(v)


def _csv_float(v: float) -> str:
    return "" if math.isnan(v) else repr(float(v))


# ---------------------------------------------------------------------------------------------- core
@dataclass
class _Samples:
    """Per-example quantities from which every metric follows (CPU, float64 / int64)."""

    correct: Tensor
    loss: Tensor
    conf: Tensor
    y: Tensor
    group: Tensor  # unknown attribute -> n_groups (an overflow slot that is dropped)
    bin: Tensor
    n_classes: int
    n_attrs: int
    aligned_mask: Tensor  # (G,) bool
    train_weights: Tensor | None  # (G,) float64, sums to 1
    classdiff_form: str
    n_unknown: int = 0

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_attrs


def _check_form(form: str, n_classes: int) -> None:
    if form not in CLASSDIFF_FORMS:
        raise ConfigError(f"unknown ClassDiff form {form!r}; expected one of: {', '.join(CLASSDIFF_FORMS)}")
    if form == "binary" and n_classes != 2:
        raise ConfigError(f"ClassDiff form 'binary' needs 2 classes, got {n_classes}; use 'mean_pairwise'")
    if form == "official3" and n_classes != 3:
        raise ConfigError(f"ClassDiff form 'official3' needs 3 classes, got {n_classes}; use 'mean_pairwise'")


def _prepare(
    logits: Tensor,
    y: Tensor,
    attr: Tensor | None,
    *,
    n_classes: int,
    n_attrs: int,
    aligned_groups: Iterable[int] = (),
    train_group_counts: Tensor | Sequence[float] | None = None,
    classdiff_form: str = "mean_pairwise",
) -> _Samples:
    """Validate inputs and compute per-example correctness, CE loss, confidence, group and ECE bin."""
    n_classes, n_attrs = int(n_classes), int(n_attrs)
    if n_classes < 1 or n_attrs < 1:
        raise ConfigError(f"n_classes and n_attrs must be >= 1, got {n_classes} and {n_attrs}")
    _check_form(classdiff_form, n_classes)
    logits = torch.as_tensor(logits).detach().to("cpu", torch.float32)
    if logits.ndim != 2 or logits.shape[1] != n_classes:
        raise ValueError(f"logits must have shape (N, {n_classes}), got {tuple(logits.shape)}")
    n = logits.shape[0]
    y = torch.as_tensor(y).detach().to("cpu", torch.long).reshape(-1)
    attr = (
        torch.full((n,), -1, dtype=torch.long)
        if attr is None
        else torch.as_tensor(attr).detach().to("cpu", torch.long).reshape(-1)
    )
    if y.numel() != n or attr.numel() != n:
        raise ValueError(f"{n} logits but {y.numel()} labels and {attr.numel()} attributes; expected one each")
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {int(y.min())}..{int(y.max())}")
    if n and (int(attr.min()) < -1 or int(attr.max()) >= n_attrs):
        raise ValueError(f"attributes must lie in 0..{n_attrs - 1} or be -1, got {int(attr.min())}..{int(attr.max())}")

    n_groups = n_classes * n_attrs
    aligned_mask = torch.zeros(n_groups, dtype=torch.bool)
    for g in aligned_groups:
        if not 0 <= int(g) < n_groups:
            raise ConfigError(f"aligned group {int(g)} outside 0..{n_groups - 1}")
        aligned_mask[int(g)] = True
    train_weights = None
    if train_group_counts is not None:
        counts = torch.as_tensor(train_group_counts, dtype=torch.float64).reshape(-1)
        if counts.numel() != n_groups or bool((counts < 0).any()) or float(counts.sum()) <= 0:
            raise ConfigError(
                f"train_group_counts: expected {n_groups} non-negative counts, not all zero; got {counts.tolist()}"
            )
        train_weights = counts / counts.sum()

    loss = F.cross_entropy(logits, y, reduction="none").double()
    probs = logits.softmax(dim=1)
    conf, pred = probs.max(dim=1)
    known = attr >= 0
    group = torch.where(known, y * n_attrs + attr, torch.full_like(y, n_groups))
    bins = ((conf.double() * ECE_BINS).ceil().long() - 1).clamp(0, ECE_BINS - 1)
    return _Samples(
        correct=(pred == y).double(),
        loss=loss,
        conf=conf.double(),
        y=y,
        group=group,
        bin=bins,
        n_classes=n_classes,
        n_attrs=n_attrs,
        aligned_mask=aligned_mask,
        train_weights=train_weights,
        classdiff_form=classdiff_form,
        n_unknown=int((~known).sum()),
    )


def _stats(s: _Samples, idx: Tensor | None = None) -> dict[str, Tensor]:
    """Sufficient statistics per replicate: ``idx`` (B, M) picks the examples of each (None: all, once)."""

    def pick(t: Tensor) -> Tensor:
        return t[None, :] if idx is None else t[idx]

    correct, loss, conf = pick(s.correct), pick(s.loss), pick(s.conf)
    b = correct.shape[0]
    offset = torch.arange(b)[:, None]

    def per_key(key: Tensor, size: int, weights: Tensor | None = None) -> Tensor:
        flat = (offset * size + key).reshape(-1)
        w = None if weights is None else weights.reshape(-1)
        return torch.bincount(flat, weights=w, minlength=b * size).reshape(b, size).double()

    g, k = s.n_groups, s.n_classes
    group, y, bins = pick(s.group), pick(s.y), pick(s.bin)
    return {
        "n": torch.full((b,), float(correct.shape[1]), dtype=torch.float64),
        "correct": correct.sum(1),
        "loss": loss.sum(1),
        "group_n": per_key(group, g + 1)[:, :g],
        "group_correct": per_key(group, g + 1, correct)[:, :g],
        "group_loss": per_key(group, g + 1, loss)[:, :g],
        "class_n": per_key(y, k),
        "class_correct": per_key(y, k, correct),
        "class_loss": per_key(y, k, loss),
        "bin_correct": per_key(bins, ECE_BINS, correct),
        "bin_conf": per_key(bins, ECE_BINS, conf),
    }


def _nanmin(x: Tensor) -> Tensor:
    """Min over the last dim ignoring NaN; NaN where every entry is NaN."""
    m = torch.where(torch.isnan(x), torch.inf, x).min(dim=-1).values
    return torch.where(torch.isinf(m), torch.nan, m)


def _class_diff_t(class_acc: Tensor, form: str) -> Tensor:
    """Vectorised ClassDiff over the last dim; NaN (empty) classes are skipped."""
    _check_form(form, class_acc.shape[-1])
    k = class_acc.shape[-1]
    if k < 2:
        return torch.full(class_acc.shape[:-1], torch.nan, dtype=class_acc.dtype)
    if form == "official3":  # BAM's official code (loss.py, LossComputer.helper): |2 a0 - a1 - a2|
        return (2 * class_acc[..., 0] - class_acc[..., 1] - class_acc[..., 2]).abs()
    i, j = torch.triu_indices(k, k, offset=1)
    # binary (K=2) is the single pair, i.e. the mean over pairs
    return torch.nanmean((class_acc[..., i] - class_acc[..., j]).abs(), dim=-1)


def _metrics(s: _Samples, st: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every summary metric, one value per replicate (shape (B,))."""
    n = st["n"]
    group_acc = st["group_correct"] / st["group_n"]
    class_acc = st["class_correct"] / st["class_n"]
    am = s.aligned_mask
    nan = torch.full_like(n, torch.nan)
    out = {
        "accuracy": st["correct"] / n,
        "loss": st["loss"] / n,
        "worst_group": _nanmin(group_acc),
        "unbiased": torch.nanmean(group_acc, dim=-1),
        "worst_class": _nanmin(class_acc),
        "mean_class": torch.nanmean(class_acc, dim=-1),
        "class_diff": _class_diff_t(class_acc, s.classdiff_form),
        "ece": (st["bin_correct"] - st["bin_conf"]).abs().sum(-1) / n,
        "n": n,
    }
    if bool(am.any()):
        out["aligned"] = torch.nanmean(group_acc[:, am], dim=-1)
        out["conflicting"] = torch.nanmean(group_acc[:, ~am], dim=-1)
        out["aligned_samples"] = st["group_correct"][:, am].sum(-1) / st["group_n"][:, am].sum(-1)
        out["conflicting_samples"] = st["group_correct"][:, ~am].sum(-1) / st["group_n"][:, ~am].sum(-1)
    else:  # no notion of alignment here: "conflicting" would be "unbiased" under a false name
        out["aligned"] = out["conflicting"] = out["aligned_samples"] = out["conflicting_samples"] = nan
    if s.train_weights is not None:
        present = (st["group_n"] > 0) & (s.train_weights > 0)
        w = s.train_weights * present
        out["weighted_group"] = (torch.nan_to_num(group_acc) * w).sum(-1) / w.sum(-1)
    else:
        out["weighted_group"] = nan
    return {k: out[k] for k in METRIC_KEYS}


# ---------------------------------------------------------------------------------------------- public API
def class_diff(class_accuracies: Sequence[float | None], form: str = "mean_pairwise") -> float:
    """BAM's ClassDiff: the gap between class accuracies (selection without group labels; lower is better).

    ``binary``: |acc0 - acc1| (K = 2 only); ``mean_pairwise``: mean |acc_i - acc_j| over pairs i < j;
    ``official3``: |2·a0 - a1 - a2|, what BAM's official code computes for its 3-class dataset (MultiNLI;
    K = 3 only; NaN when a class has no samples). Otherwise classes with no samples (NaN / None) are skipped;
    NaN if fewer than two classes remain.
    """
    acc = torch.tensor([_NAN if a is None else float(a) for a in class_accuracies], dtype=torch.float64)
    return float(_class_diff_t(acc[None, :], form)[0])


def evaluate_predictions(
    logits: Tensor,
    y: Tensor,
    attr: Tensor | None,
    *,
    n_classes: int,
    n_attrs: int,
    aligned_groups: Iterable[int] = (),
    train_group_counts: Tensor | Sequence[float] | None = None,
    classdiff_form: str = "mean_pairwise",
    class_names: Sequence[str] | None = None,
    attr_names: Sequence[str] | None = None,
) -> EvalReport:
    """Evaluate logits ``(N, K)`` against labels ``y`` and attributes ``attr`` (-1 unknown; None: all are).

    Groups are ``y * n_attrs + attr``. ``aligned_groups`` defines aligned/conflicting metrics (NaN without).
    ``train_group_counts`` (one count per group) gives ``weighted_group``, the JTT/GroupDRO "average accuracy"
    for Waterbirds (group accuracies weighted by training proportions); NaN when not given.
    """
    s = _prepare(
        logits,
        y,
        attr,
        n_classes=n_classes,
        n_attrs=n_attrs,
        aligned_groups=aligned_groups,
        train_group_counts=train_group_counts,
        classdiff_form=classdiff_form,
    )
    st = _stats(s)
    metrics = {k: float(v[0]) for k, v in _metrics(s, st).items()}
    n_total = int(st["n"][0])

    gn, gc, gl = (st[k][0] for k in ("group_n", "group_correct", "group_loss"))
    rows = [
        GroupRow(
            group=g,
            y=g // s.n_attrs,
            attr=g % s.n_attrs,
            n=int(gn[g]),
            correct=int(gc[g]),
            accuracy=float(gc[g] / gn[g]) if gn[g] > 0 else _NAN,
            loss=float(gl[g] / gn[g]) if gn[g] > 0 else _NAN,
            aligned=bool(s.aligned_mask[g]),
        )
        for g in range(s.n_groups)
    ]
    cn, cc, cl = (st[k][0] for k in ("class_n", "class_correct", "class_loss"))
    class_rows = [
        ClassRow(
            y=c,
            n=int(cn[c]),
            correct=int(cc[c]),
            accuracy=float(cc[c] / cn[c]) if cn[c] > 0 else _NAN,
            loss=float(cl[c] / cn[c]) if cn[c] > 0 else _NAN,
        )
        for c in range(s.n_classes)
    ]

    if n_total == 0:
        log.warning("evaluating 0 examples: every metric is NaN")
    elif s.n_unknown == n_total:
        log.debug("attributes unknown for all %d examples: group metrics are NaN", n_total)
    else:
        if s.n_unknown:
            log.warning(
                "attributes unknown for %d of %d examples: group metrics use the %d known ones only",
                s.n_unknown,
                n_total,
                n_total - s.n_unknown,
            )
        empty = [r.group for r in rows if r.n == 0]
        if empty:
            log.warning(
                "%d of %d groups have no examples (ids %s): their accuracy is NaN and summaries skip them",
                len(empty),
                s.n_groups,
                ", ".join(map(str, empty[:20])) + (", ..." if len(empty) > 20 else ""),
            )
    return EvalReport(
        rows=rows,
        class_rows=class_rows,
        metrics=metrics,
        n_classes=s.n_classes,
        n_attrs=s.n_attrs,
        classdiff_form=classdiff_form,
        class_names=list(class_names) if class_names is not None else None,
        attr_names=list(attr_names) if attr_names is not None else None,
    )


def bootstrap_ci(
    logits: Tensor,
    y: Tensor,
    attr: Tensor | None,
    metric: str,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of one metric, resampling examples with replacement.

    ``kwargs`` are those of :func:`evaluate_predictions`. Per-example correctness/loss are computed once;
    each replicate only re-counts them by group, class and confidence bin (no model, no argmax), in chunks.
    Replicates where the metric is NaN (e.g. a group drawn empty for ``aligned``) are dropped.
    """
    if metric not in METRIC_KEYS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of: {', '.join(METRIC_KEYS)}")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ConfigError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")
    kwargs.pop("class_names", None)
    kwargs.pop("attr_names", None)
    s = _prepare(logits, y, attr, **kwargs)
    n = s.correct.numel()
    if n == 0:
        return _NAN, _NAN
    gen = torch.Generator().manual_seed(int(seed))
    chunk = max(1, min(n_boot, 2_000_000 // n))
    values = []
    for start in range(0, n_boot, chunk):
        idx = torch.randint(n, (min(chunk, n_boot - start), n), generator=gen)
        values.append(_metrics(s, _stats(s, idx))[metric])
    v = torch.cat(values)
    v = v[~torch.isnan(v)]
    if v.numel() == 0:
        return _NAN, _NAN
    q = torch.quantile(v, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=v.dtype))
    return float(q[0]), float(q[1])


class PredictionCollector:
    """Accumulates ``(logits, y, attr)`` batch by batch (detached, CPU, float32); evaluates them at the end.

    ``defaults`` are keyword arguments for :func:`evaluate_predictions` (``n_classes``, ``n_attrs``, ...);
    those given to :meth:`report` override them.
    """

    def __init__(self, **defaults: Any) -> None:
        self.defaults = defaults
        self.reset()

    def reset(self) -> None:
        self._logits: list[Tensor] = []
        self._y: list[Tensor] = []
        self._attr: list[Tensor] = []

    def __len__(self) -> int:
        return sum(t.shape[0] for t in self._y)

    def add(self, logits: Tensor, y: Tensor, attr: Tensor | None = None) -> None:
        logits = logits.detach().to("cpu", torch.float32)
        if logits.ndim == 1:
            logits = logits[None, :]
        y = y.detach().to("cpu", torch.long).reshape(-1)
        attr = torch.full_like(y, -1) if attr is None else attr.detach().to("cpu", torch.long).reshape(-1)
        if logits.shape[0] != y.numel() or attr.numel() != y.numel():
            raise ValueError(
                f"batch of {logits.shape[0]} logits, {y.numel()} labels and {attr.numel()} attributes; "
                "expected one each"
            )
        self._logits.append(logits)
        self._y.append(y)
        self._attr.append(attr)

    def tensors(self, n_classes: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The concatenated ``(logits, y, attr)`` collected so far."""
        if not self._y:
            k = int(n_classes if n_classes is not None else self.defaults.get("n_classes", 0))
            empty = torch.zeros(0, dtype=torch.long)
            return torch.zeros(0, k), empty, empty.clone()
        return torch.cat(self._logits), torch.cat(self._y), torch.cat(self._attr)

    def report(self, **kwargs: Any) -> EvalReport:
        options = {**self.defaults, **kwargs}
        logits, y, attr = self.tensors(options.get("n_classes"))
        return evaluate_predictions(logits, y, attr, **options)
