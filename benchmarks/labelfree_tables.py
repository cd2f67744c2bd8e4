"""Tables of the label-free suites (``labelfree``, ``labelfree-bmnist``): how well each inferrer finds the
bias-conflicting examples, and what reweight_group, GroupDRO and DFR reach on its groups beside the same methods on
the true groups. ``benchmarks/make_docs.py`` puts them on ``docs/results/labelfree.md``.

Reads the committed copy of a suite's output: run folders (``final.json``) and, for each groups file, its meta
(``groups/<inferrer>/[r<ratio>/]seed<n>.json``, what ``python benchmarks/labelfree_tables.py --copy-meta`` writes
from the ``.npz`` files). Rows are named from each record: its method, the inferrer of its groups file, its
selection rule; the label column is the record's own ``labels``.

    python benchmarks/labelfree_tables.py --copy-meta RUNS_OUT RESULTS_DIR   # groups metas of a finished suite
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import cmnist_tables as ct
import numpy as np

from debiaslab.bench.stats import difference_cell
from debiaslab.evaluation.ledger import ledger_text as ledger_line

INFERRERS = ("error_set", "gce", "amplified", "cluster", "eiil")
GROUP_METHODS = ("reweight_group", "groupdro", "dfr")
RATIOS = ("0.005", "0.01", "0.02", "0.05")


def ledger_text(labels: dict | None) -> str:
    """``train: inferred groups (<file>) · select: inferred groups (<file>)`` from a record's ``labels``."""
    return ledger_line(labels) if labels else "–"


def row_key(final: dict) -> str:
    """The row a record belongs to: method, the inferrer of its groups, and for ERM the rule that selected it."""
    groups = final.get("groups")
    if groups:
        return f"{final['method']} + {groups['inferrer']}"
    if final["method"] == "erm":
        return f"erm (selected by {final['selection']})"
    return f"{final['method']} (true groups)"


def setting_of(options: dict) -> str:
    """A run's column: its ratio (Colored MNIST), else its ``rho`` (Biased MNIST) as ``ρ 0.99``, else ``all``."""
    if "ratio" in options:
        return str(options["ratio"])
    return f"ρ {options['rho']:g}" if "rho" in options else "all"


def setting_name(setting: str) -> str:
    """A column's heading: ``1 %`` for a ratio, the setting itself otherwise."""
    try:
        return f"{100 * float(setting):g} %"
    except ValueError:
        return setting


def load_runs(root: Path) -> dict[str, dict[str, list[dict]]]:
    """``{row: {setting: [final, ...]}}``; the setting is what :func:`setting_of` names."""
    out: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(root.rglob("final.json")):
        final = {**json.loads(path.read_text()), "_dir": str(path.parent)}
        setting = setting_of(final.get("dataset_options", {}))
        out.setdefault(row_key(final), {}).setdefault(setting, []).append(final)
    return out


def load_metas(root: Path) -> dict[str, dict[str, list[dict]]]:
    """``{inferrer: {setting: [groups meta, ...]}}`` from the copied groups metas."""
    out: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(root.glob("groups/*/**/seed*.json")):
        meta = json.loads(path.read_text())
        setting = setting_of(meta.get("dataset_options", {}))
        out.setdefault(meta["inferrer"], {}).setdefault(setting, []).append(meta)
    return out


def settings_of(root: Path) -> list[str]:
    found = {s for rows in load_runs(root).values() for s in rows}
    return [r for r in RATIOS if r in found] or sorted(found)


def _head(settings: Sequence[str], first: str, extra: Sequence[str] = ()) -> str:
    names = [setting_name(s) for s in settings]
    cols = [first, *extra, *names]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "–"
    mean = scale * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f} (n=1)"
    return f"{mean:.1f} ± {scale * statistics.stdev(values):.1f}" + ("" if len(values) >= 3 else f" (n={len(values)})")


def quality_table(root: Path) -> str | None:
    """Per inferrer: precision / recall of its training minority against the bias-conflicting examples (%, mean over
    seeds), and the minority's share of the training set."""
    metas = load_metas(root)
    if not metas:
        return None
    settings = settings_of(root)
    lines = [_head(settings, "inferrer", ("what is scored",))]
    for name in INFERRERS:
        if name not in metas:
            continue
        scored = (("precision", "precision"), ("recall", "recall"), ("share of training set", "minority_share"))
        for what, key in scored:
            cells = []
            for s in settings:
                values = [m["quality"]["train"].get(key) for m in metas[name].get(s, [])]
                cells.append(_mean_std([v for v in values if v is not None]))
            lines.append(f"| {name if what == 'precision' else ''} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ordered_rows(rows: dict[str, dict[str, list[dict]]]) -> list[str]:
    order = ["erm (selected by val_unbiased)", "erm (selected by val_worst_class)"]
    for method in GROUP_METHODS:
        order.append(f"{method} (true groups)")
        order += [f"{method} + {name}" for name in INFERRERS]
    return [r for r in order if r in rows] + sorted(r for r in rows if r not in order)


def accuracy_table(root: Path, metric: str) -> str | None:
    """Test ``metric`` (%, mean and 95 % interval over seeds and test examples) of every row, with the labels each
    row used."""
    rows = load_runs(root)
    if not rows:
        return None
    settings = settings_of(root)
    lines = [_head(settings, "method", ("labels (training; checkpoint selection)",))]
    for key in ordered_rows(rows):
        finals = [f for fs in rows[key].values() for f in fs]
        ledgers = {ledger_text(f.get("labels")) for f in finals}
        cells = [ct.interval_cell_of(rows[key].get(s, []), ct.test_metric(metric)) for s in settings]
        lines.append(f"| {key} | {' / '.join(sorted(ledgers))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuned_table(
    tune_root: Path | Sequence[Path],
    preset_root: Path | None,
    rule: str,
    metric: str = "unbiased",
    ledger: Callable[[dict], str] | None = None,
) -> str | None:
    """Test ``metric`` of the pipelines ``labelfree-tune`` tuned (the configuration ``rule`` chose on validation,
    read on the inferred validation groups or none), each above the same pipeline at its preset from the
    ``labelfree`` suite (``preset_root``), with the labels each row read (``ledger`` of a record; a run that
    reports ``rule`` from another rule's training carries ``_rule``, and its selection is ``rule``'s)."""
    ledger = ledger or (lambda f: ledger_text(f.get("labels")))
    from tune_tables import _marked, _with_notes, rule_runs

    from debiaslab.bench.health_marks import HealthNotes

    tuned: dict[str, dict[str, list[dict]]] = {}
    for final in rule_runs(tune_root, rule):
        setting = setting_of(final.get("dataset_options", {}))
        tuned.setdefault(row_key(final), {}).setdefault(setting, []).append(final)
    if not tuned:
        return None
    preset = load_runs(preset_root) if preset_root is not None else {}
    found = {s for rows in tuned.values() for s in rows}
    settings = [r for r in RATIOS if r in found] or sorted(found)
    lines = [_head(settings, "pipeline", ("settings", "labels (training; checkpoint selection)"))]
    notes = HealthNotes()
    for key in ordered_rows(tuned):
        for label, rows in (("tuned", tuned), ("preset", preset)):
            if key not in rows:
                continue
            ledgers = {ledger(f) for fs in rows[key].values() for f in fs}
            cells = [
                _marked(ct.interval_cell_of(runs, ct.test_metric(metric)), notes, f"{key} ({label})", runs)
                for runs in (rows[key].get(s, []) for s in settings)
            ]
            name = key if label == "tuned" else ""
            lines.append(f"| {name} | {label} | {' / '.join(sorted(ledgers))} | " + " | ".join(cells) + " |")
    return _with_notes(lines, notes)


def gap_sentence(root: Path, setting: str = "0.01", metric: str = "unbiased") -> str | None:
    """The pipeline without group labels that scores best on **validation** at ``setting`` (``metric`` on the
    validation split's true groups, read after training: the benchmark's own choice, never a test number) against
    the same method on the true groups on test, paired by seed (the difference, its 95 % interval and the seeds
    where the pipeline scored higher)."""
    rows = load_runs(root)
    best: tuple[float, str, str] | None = None
    for method in GROUP_METHODS:
        for name in INFERRERS:
            runs = rows.get(f"{method} + {name}", {}).get(setting, [])
            if len(runs) >= 2:
                val = statistics.fmean(f["metrics"]["val"][metric] for f in runs)
                if best is None or val > best[0]:
                    best = (val, method, name)
    if best is None:
        return None
    val, method, name = best
    mean = statistics.fmean(f["metrics"]["test"][metric] for f in rows[f"{method} + {name}"][setting])
    labelled = {f["seed"]: f for f in rows.get(f"{method} (true groups)", {}).get(setting, [])}
    pipeline = {f["seed"]: f for f in rows[f"{method} + {name}"][setting]}
    seeds = sorted(set(labelled) & set(pipeline))
    if not seeds:
        return None
    get = ct.test_metric(metric)
    diff = ct.STATS.difference(
        [ct.scores_of(pipeline[s], get) for s in seeds], [ct.scores_of(labelled[s], get) for s in seeds], metric
    )
    ref = statistics.fmean(labelled[s]["metrics"]["test"][metric] for s in seeds)
    return (
        f"At {setting_name(setting)}, the pipeline without group labels with the highest validation {metric} accuracy "
        f"({100 * val:.1f}) is **{method} on {name} groups**: test {metric} "
        f"{100 * mean:.1f} against {100 * ref:.1f} for {method} on the true groups; paired by seed "
        f"({', '.join(map(str, seeds))}), the difference is {difference_cell(diff)} points (95 % interval; ○: not "
        "told apart from the true groups)."
    )


def copy_metas(runs_out: Path, results: Path) -> int:
    """Write each groups file's meta (``.npz`` -> ``.json``) under ``results``, mirroring the folders."""
    n = 0
    for npz in sorted(runs_out.glob("*/groups/**/seed*.npz")):
        with np.load(npz, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
        target = results / npz.relative_to(runs_out).with_suffix(".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copy-meta", nargs=2, metavar=("RUNS_OUT", "RESULTS_DIR"))
    parser.add_argument("root", nargs="?", type=Path, help="print the tables of this folder")
    args = parser.parse_args(argv)
    if args.copy_meta:
        n = copy_metas(Path(args.copy_meta[0]), Path(args.copy_meta[1]))
        print(f"{n} groups metas written")
        return 0
    if args.root:
        for make in (quality_table, lambda r: accuracy_table(r, "unbiased"), gap_sentence):
            print(make(args.root) or "", end="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
