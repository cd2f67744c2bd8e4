"""Print the Colored MNIST tables of ``docs/results/`` (BAM, DeNetDM, DeTT/KD, ULE, the REST sweep...) from run
directories; ``benchmarks/make_docs.py`` assembles the pages from them.

Reads every ``final.json`` under ROOT (rows by each run's recorded method and ratio; ``runs/cmnist`` or the
committed copy under ``benchmarks/results/``). Cells are mean ± std over the seeds found, with ``n`` when fewer
than three. Run: ``python benchmarks/cmnist_tables.py ROOT --table bam|denetdm|dett|ule`` or
``runs/rest-sweep --table rest``; tuning tables: ``runs/tune/ule --table ule-tune``, ``runs/tune --table bam-tune``,
``runs/jtt5 --table jtt-tune``, ULE variants across ratios: ``runs/ule-cand --table ule-cand``; DeNetDM selected
on test: ``runs/denetdm-paper --table denetdm-paper``; distillation settings: ``runs/kd-sweep --table kd-sweep``,
and plain KD at another α / τ: ``runs/kd-a0.1-t1 --table kd``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from debiaslab.bench.ledger import label_ledger
from debiaslab.bench.stats import RunScores, Stats, interval_cell, run_scores
from debiaslab.evaluation.intervals import COUNT_METRICS
from debiaslab.evaluation.ledger import ledger_text

RATIOS = ("0.005", "0.01", "0.02", "0.05")


def load(
    root: Path | Sequence[Path],
    method: str | None,
    protocol: str = "default",
    keep: Callable[[dict], bool] | None = None,
) -> dict[str, list[dict]]:
    """Finished runs of ``method`` per ratio: every ``final.json`` under ``root`` (one folder or several) whose
    recorded method is ``method``, whatever folder it sits in, so renaming a method is a change of its records'
    ``method`` field, not of this code (``None``: every method). Only runs of ``protocol`` (and for which
    ``keep(final)`` holds, when given)."""
    roots = [root] if isinstance(root, Path) else list(root)
    out: dict[str, list[dict]] = {r: [] for r in RATIOS}
    for base in roots:
        for final in sorted(base.rglob("final.json")):
            run = dict(read_final(final))
            ratio = f"{run.get('dataset_options', {}).get('ratio', '')}"
            wanted = method in (None, run["method"]) and (keep is None or keep(run))
            if wanted and run.get("protocol", "default") == protocol and ratio in out:
                run["_dir"] = str(final.parent)
                out[ratio].append(run)
    return out


@functools.cache
def _read_final(path: Path) -> str:
    return path.read_text()


def read_final(path: Path) -> dict:
    """A run's ``final.json`` (the text is read once per process: several tables read the same runs)."""
    return json.loads(_read_final(path))


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f} (n=1)"
    std = 100 * statistics.stdev(values)
    suffix = "" if len(values) >= 3 else f" (n={len(values)})"
    return f"{mean:.1f} ± {std:.1f}{suffix}"


#: intervals of every table of this process (each set of runs computed once)
STATS = Stats()


def row(label: str, runs: dict[str, list[dict]], get: Callable[[dict], float | None]) -> str:
    """One table row over the ratios: a 95 % interval per cell for a test metric (:func:`test_metric`,
    :func:`readout`), mean ± std for anything else."""
    cells = [interval_cell_of(runs[r], get) for r in RATIOS]
    return f"| {label} | " + " | ".join(cells) + " |"


def run_labels(run: dict) -> str:
    """The label ledger of ``run`` (a ``final.json`` read by :func:`load`; ``_rule``: a rule it reports) as one
    line; runs it was built on are looked up where their hyperparameters name them."""
    return ledger_text(label_ledger(run, run.get("_rule")))


def interval_cell_of(runs: list[dict], get: Callable[[dict], float | None], style: str = "bracket") -> str:
    """The cell of ``runs`` (one per seed) for ``get``: an interval when ``get`` reads a test metric that has one."""
    metric = getattr(get, "metric", None)
    if metric not in COUNT_METRICS or not runs:
        return cell([v for v in (get(run) for run in runs) if v is not None])
    scores = [scores_of(run, get) for run in runs]
    return interval_cell(STATS.interval(scores, metric), style)


def scores_of(run: dict, get: Callable[[dict], float | None]) -> RunScores:
    """What the statistics need of ``run`` for ``get``: the deployed model's per-group counts, or (a readout, a
    rule reported beside the deployed one) its values only."""
    if getattr(get, "readout", None) is None:
        return run_scores(run, run.get("_dir"), run.get("_rule"))
    value = get(run)
    values = {} if value is None else {get.metric: value}  # type: ignore[attr-defined]
    key = f"{run['_dir']}#{get.readout}" if "_dir" in run else None  # type: ignore[attr-defined]
    return RunScores(key, int(run.get("seed", 0)), values)


def table_head(*columns: str) -> str:
    """A Markdown table's header row and separator."""
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def header(first: str = "") -> str:
    return table_head(first, "0.5 %", "1 %", "2 %", "5 %")


def test_metric(name: str) -> Callable[[dict], float]:
    """The deployed model's test ``name`` (a table cell shows its interval)."""

    def get(run: dict) -> float:
        return run["metrics"]["test"][name]

    get.metric = name  # type: ignore[attr-defined]
    return get


def readout(key: str, name: str) -> Callable[[dict], float | None]:
    """Test ``name`` of a further model the run reports (an expert, a teacher, ``selected_by_<rule>``: the epoch
    another rule picks, under ``selections`` in newer records): its interval over seeds only."""

    def get(run: dict) -> float | None:
        found = run.get("readouts", {}).get(key, {}).get("test", {}).get(name)
        if found is None and key.startswith("selected_by_"):
            found = (run.get("selections") or {}).get(key.removeprefix("selected_by_"), {}).get("test", {}).get(name)
        return found

    get.metric, get.readout = name, key  # type: ignore[attr-defined]
    return get


def bam_table(root: Path) -> str:
    runs = load(root, "bam")
    lines = [header("BAM, test %")]
    for metric in ("unbiased", "worst_group", "conflicting", "aligned"):
        lines.append(row(f"{metric}, epoch by validation unbiased (deployed)", runs, test_metric(metric)))
        lines.append(row(f"{metric}, epoch by ClassDiff (no group labels)", runs,
                         readout("selected_by_val_classdiff", metric)))  # fmt: skip
        lines.append(row(f"{metric}, epoch by validation worst-group", runs,
                         readout("selected_by_val_worst_group", metric)))  # fmt: skip
    lines.append(row("error-set precision (conflicting share)", runs, lambda r: r["extras"]["error_set_precision"]))
    lines.append(row("error-set recall (of conflicting)", runs, lambda r: r["extras"]["error_set_recall"]))
    return "\n".join(lines)


def denetdm_table(root: Path) -> str:
    runs = load(root, "denetdm")
    lines = [header("DeNetDM, test %")]
    for metric in ("unbiased", "conflicting", "aligned", "worst_group"):
        lines.append(row(f"target (deployed): {metric}", runs, test_metric(metric)))
    for key, name in (("deep_expert", "deep expert (stage 1)"), ("shallow_expert", "shallow expert (stage 1)")):
        for metric in ("conflicting", "aligned", "unbiased"):
            lines.append(row(f"{name}: {metric}", runs, readout(key, metric)))
    return "\n".join(lines)


def history(run_dir: Path) -> list[dict]:
    """The run's per-epoch log (``metrics.jsonl``), one dict per epoch and stage."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def last_epoch(log: list[dict], stage: str, predictor: str = "val") -> float:
    """Unbiased accuracy on the selection split at the last epoch of ``stage`` in a run's ``history``."""
    return [h for h in log if h["stage"] == stage][-1][predictor]["unbiased"]


def denetdm_paper_table(root: Path) -> str:
    """DeNetDM under ``protocol=paper`` (``<root>/denetdm/r<ratio>/seed*``): the selection split is test, so the
    per-epoch log holds test accuracy and shows what choosing the epoch on test adds over not choosing at all."""
    runs: dict[str, list[dict]] = {r: [] for r in RATIOS}
    for ratio in RATIOS:
        for final in sorted((root / "denetdm" / f"r{ratio}").glob("seed*/final.json")):
            run = json.loads(final.read_text())
            if run["selection_split"] != "test":
                raise SystemExit(f"{final}: selected on {run['selection_split']!r}; this table needs protocol=paper")
            log = history(final.parent)
            run["_dir"] = str(final.parent)
            run["last"] = {"target": last_epoch(log, "distill"), "shallow": last_epoch(log, "experts", "val_shallow")}
            runs[ratio].append(run)
    lines = [header("DeNetDM, paper protocol, test unbiased %")]
    lines.append(row("target, epoch best on test (the paper's practice)", runs, test_metric("unbiased")))
    lines.append(
        row("target, last distillation epoch (stage 1 still chosen on test)", runs, lambda run: run["last"]["target"])
    )
    lines.append(row("shallow expert, stage-1 epoch best on test", runs, readout("shallow_expert", "unbiased")))
    lines.append(row("shallow expert, last stage-1 epoch", runs, lambda run: run["last"]["shallow"]))
    return "\n".join(lines)


def dett_table(root: Path) -> str:
    dett, kd = load(root, "dett"), load(root, "kd")
    lines = [header("test unbiased % (conflicting %)")]
    lines.append(row("GroupDRO teacher (MLP 3×100)", dett, readout("teacher", "unbiased")))
    lines.append(row("plain KD student (MLP 2×32)", kd, test_metric("unbiased")))
    lines.append(row("DeTT student (MLP 2×32 + projector, teacher head)", dett, test_metric("unbiased")))
    lines.append(row("teacher conflicting", dett, readout("teacher", "conflicting")))
    lines.append(row("KD student conflicting", kd, test_metric("conflicting")))
    lines.append(row("DeTT student conflicting", dett, test_metric("conflicting")))
    params = []
    for runs, name, key in ((dett, "teacher", "teacher_params"), (kd, "KD student", "student_params"),
                            (dett, "DeTT student", "student_params")):  # fmt: skip
        values = {r["extras"][key] for ratio in RATIOS for r in runs[ratio]}
        params.append(f"{name}: {', '.join(f'{v:,}' for v in sorted(values))} parameters")
    return "\n".join(lines) + "\n\n" + "; ".join(params)


def kd_table(root: Path, split: str = "test") -> str:
    """Plain KD runs alone (e.g. another α / τ than the suite's): the student against its own teacher, on
    ``split`` (``val`` for a setting that is compared, not deployed)."""
    runs = load(root, "kd")
    lines = [header(f"plain KD, {split} %")]

    def teacher(run: dict) -> float:
        return run["readouts"]["teacher"][split]["unbiased"]

    def student(name: str) -> Callable[[dict], float]:
        return lambda run: run["metrics"][split][name]

    lines.append(row("teacher unbiased", runs, teacher))
    lines.append(row("KD student unbiased", runs, student("unbiased")))
    lines.append(row("student − teacher (points)", runs, lambda r: r["metrics"][split]["unbiased"] - teacher(r)))
    lines.append(row("KD student conflicting", runs, student("conflicting")))
    lines.append(row("KD student aligned", runs, student("aligned")))
    return "\n".join(lines)


def ule_table(
    root: Path | Sequence[Path], method: str | None = "ule", keep: Callable[[dict], bool] | None = None, name: str = ""
) -> str:
    """The deployed teacher of ``method`` (``ule`` or ``mistake_reweight``; or the runs ``keep`` picks), test
    metrics over seeds."""
    runs = load(root, method, keep=keep)
    lines = [header(f"{name or method}, test %")]
    for metric in ("unbiased", "worst_group", "conflicting", "aligned"):
        lines.append(row(f"teacher (deployed): {metric}", runs, test_metric(metric)))
    return "\n".join(lines)


def rest_table(root: Path) -> str:
    """The density sweep (``r<ratio>/d<density>/seed*/final.json``): validation scores (the densities are
    compared) and the measured cost of each sparse model."""
    lines = [
        table_head(
            "ratio",
            "density",
            "val unbiased %",
            "val conflicting %",
            "val worst-group %",
            "non-zero params",
            "inference MACs",
            "training MACs (rel. dense)",
            "checkpoint bytes (sparse / dense)",
        )
    ]
    for final in sorted(root.glob("r*/d*/seed*/final.json"), key=lambda p: (p.parts[-4], float(p.parts[-3][1:]))):
        run = json.loads(final.read_text())
        m, cost = run["metrics"]["val"], run["extras"].get("cost", {})
        if cost:
            params, macs = f"{cost['params_nonzero']:,}", f"{cost['inference_macs_sparse']:,}"
            train = f"{cost['train_macs_ratio']:.3f}"
            ckpt = f"{cost['checkpoint_bytes_sparse']:,} / {cost['checkpoint_bytes_dense']:,}"
        else:
            params, macs, train, ckpt = "dense", "dense", "1.00", "–"
        ratio, density = final.parts[-4][1:], final.parts[-3][1:]
        scores = " | ".join(f"{100 * m[k]:.1f}" for k in ("unbiased", "conflicting", "worst_group"))
        lines.append(f"| {ratio} | {density} | {scores} | {params} | {macs} | {train} | {ckpt} |")
    return "\n".join(lines)


def bam_tune_table(root: Path) -> str:
    """The BAM tuning runs (any ``*/final.json`` under ``root``), best validation score first; validation
    scores only (the configurations were compared on them)."""
    runs = [json.loads(f.read_text()) for f in sorted(root.glob("**/final.json"))]
    runs.sort(key=lambda r: -r["selected"]["score"])
    lines = [
        table_head(
            "λ",
            "T",
            "μ",
            "stage-2 wd",
            "stage-2 lr",
            "val unbiased",
            "val worst-group",
            "error-set precision / recall",
            "epoch",
        )
    ]
    for run in runs:
        hp, ex = run["hparams"], run["extras"]
        lines.append(
            f"| {hp['aux_lambda']:g} | {hp['amplify_epochs']} | {hp['mu']} | {hp.get('upweight_weight_decay', 0):g} "
            f"| {hp.get('upweight_lr', 0.05):g} | {100 * run['selected']['score']:.1f} "
            f"| {100 * run['metrics']['val']['worst_group']:.1f} "
            f"| {ex['error_set_precision']:.2f} / {ex['error_set_recall']:.2f} | {run['selected']['epoch']} |"
        )
    return "\n".join(lines)


def ule_tune_table(root: Path) -> str:
    """The ULE variant runs (``<variant>/final.json``), teacher and student validation scores at the kept epoch
    (validation only: the variants were compared on it)."""
    lines = [
        table_head(
            "Ω variant",
            "val unbiased, teacher",
            "val unbiased, student (same epoch)",
            "val conflicting",
            "val worst-group",
            "epoch",
        )
    ]
    rows = []
    for final in sorted(root.glob("*/final.json")):
        run = json.loads(final.read_text())
        epoch = run["selected"]["epoch"]
        student = next(h for h in history(final.parent) if h["epoch"] == epoch)["val_student"]["unbiased"]
        m = run["metrics"]["val"]
        rows.append((run["selected"]["score"], final.parent.name, student, m, epoch))
    for score, name, student, m, epoch in sorted(rows, key=lambda r: -r[0]):
        lines.append(
            f"| {name} | {100 * score:.1f} | {100 * student:.1f} "
            f"| {100 * m['conflicting']:.1f} | {100 * m['worst_group']:.1f} | {epoch} |"
        )
    return "\n".join(lines)


def ule_cand_table(root: Path) -> str:
    """ULE variants across ratios (``<variant>/r<ratio>/seed*/final.json``): the teacher's validation unbiased
    and worst-group accuracy at its kept epoch (means over the seeds found), rows in name order."""
    lines = [header("variant: val unbiased / val worst-group (kept epoch)")]
    for variant in sorted(p for p in root.iterdir() if p.is_dir()):
        cells = []
        for runs in load(variant, None).values():
            if not runs:
                cells.append("–")
                continue
            val = statistics.fmean(run["metrics"]["val"]["unbiased"] for run in runs)
            worst = statistics.fmean(run["metrics"]["val"]["worst_group"] for run in runs)
            epochs = ", ".join(str(run["selected"]["epoch"]) for run in runs)
            cells.append(f"{100 * val:.1f} / {100 * worst:.1f} ({epochs})")
        lines.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def resolved(final: Path) -> dict:
    """The run's resolved hyperparameters (``config.yaml`` beside ``final.json``)."""
    return yaml.safe_load((final.parent / "config.yaml").read_text())["resolved_hparams"]


def kd_sweep_table(root: Path) -> str:
    """Distillation settings (``r<ratio>/<setting>/final.json``): plain KD and DeTT students of the same teacher,
    validation scores only (the settings were compared on them)."""
    lines = [
        table_head(
            "ratio", "student", "method", "KD weight α / τ", "params", "teacher val unbiased",
            "student val unbiased", "student − teacher", "val conflicting", "val aligned",
        )
    ]  # fmt: skip
    for final in sorted(root.glob("r*/*/final.json"), key=lambda p: (float(p.parts[-3][1:]), p.parts[-2])):
        run, hp = json.loads(final.read_text()), resolved(final)
        m, teacher = run["metrics"]["val"], run["readouts"]["teacher"]["val"]["unbiased"]
        width, depth = hp["model_kwargs"].get("width", 100), hp["model_kwargs"].get("depth", 3)
        kd = f"{hp['kd_weight']:g} / {hp['temperature']:g}" if run["method"] == "kd" else "–"
        lines.append(
            f"| {final.parts[-3][1:]} | MLP {depth}×{width} | {run['method']} | {kd} "
            f"| {run['extras']['student_params']:,} | {100 * teacher:.1f} | {100 * m['unbiased']:.1f} "
            f"| {100 * (m['unbiased'] - teacher):+.1f} | {100 * m['conflicting']:.1f} | {100 * m['aligned']:.1f} |"
        )
    return "\n".join(lines)


def jtt_tune_table(root: Path) -> str:
    """JTT runs (any ``*/final.json`` under ``root``): error-set quality and validation scores per setting (no
    test number: the settings were compared on validation)."""
    lines = [
        table_head(
            "ratio", "identify lr", "T", "λ_up", "stage-2 wd", "stage-2 epochs", "error set", "precision / recall",
            "val unbiased", "val worst-group", "epoch",
        )
    ]  # fmt: skip
    runs = []
    for final in sorted(root.glob("**/final.json")):
        run, hp = json.loads(final.read_text()), resolved(final)
        if run["method"] == "jtt":
            runs.append((float(run["dataset_options"]["ratio"]), -run["selected"]["score"], run, hp))
    for ratio, _, run, hp in sorted(runs, key=lambda r: r[:2]):
        ex, lr = run["extras"], hp["identify_lr"] if hp["identify_lr"] is not None else hp["lr"]
        val = run["metrics"]["val"]
        lines.append(
            f"| {ratio:g} | {lr:g} | {hp['identify_epochs']} | {hp['lambda_up']} | {hp['weight_decay']:g} "
            f"| {hp['epochs']} | {ex['error_set_size']:,} "
            f"| {ex['error_set_precision']:.2f} / {ex['error_set_recall']:.2f} "
            f"| {100 * val['unbiased']:.1f} | {100 * val['worst_group']:.1f} | {run['selected']['epoch']} |"
        )
    return "\n".join(lines)


def main() -> None:
    tables = {
        "bam": bam_table,
        "bam-tune": bam_tune_table,
        "denetdm": denetdm_table,
        "denetdm-paper": denetdm_paper_table,
        "dett": dett_table,
        "kd": kd_table,
        "ule": ule_table,
        "ule-tune": ule_tune_table,
        "ule-cand": ule_cand_table,
        "rest": rest_table,
        "kd-sweep": kd_sweep_table,
        "jtt-tune": jtt_tune_table,
    }
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--table", choices=list(tables), required=True)
    args = parser.parse_args()
    print(tables[args.table](args.root))


if __name__ == "__main__":
    main()
