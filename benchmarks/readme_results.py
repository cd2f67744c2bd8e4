"""Write a suite's results into a Markdown file, between ``<!-- bench:SUITE:start -->`` and ``... :end -->``.

For a suite run of your own (the project's README and ``docs/results/`` are generated from the committed run
records by ``benchmarks/make_docs.py`` instead).

Re-aggregates the suite's finished runs under OUT (``debiaslab bench SUITE --out OUT --report-only``: nothing
trains), then replaces the marked block with the by-ratio tables of the report (headline metric and worst-group
accuracy, ours beside the published numbers), the date, the machine the runs recorded, the run counts and the
command. Runs missing from the suite are listed as such, so a partial table says it is partial.

    python benchmarks/readme_results.py cmnist --out runs [--readme README.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import subprocess
import sys
from pathlib import Path

from debiaslab.bench.runner import STATUSES, run_suite
from debiaslab.bench.suite import load_suite


def block(suite_name: str, out: Path) -> str:
    """The Markdown block for ``suite_name``'s runs under ``out``."""
    suite = load_suite(suite_name)
    result = run_suite(suite, out, report_only=True, progress=False)
    finals = [_final(s.run.run_dir) for s in result.states if s.status in ("finished", "skipped")]
    machine = next((str(f["machine"]) for f in finals if f.get("machine")), "unknown")
    counts = ", ".join(f"{result.count(k)} {k}" for k in STATUSES if result.count(k))
    finished = sorted(str(f.get("finished_at", "")) for f in finals) or ["none"]
    lines = [
        f"Generated {_dt.date.today().isoformat()} by `python benchmarks/readme_results.py {suite_name} --out {out}`"
        f" from the runs of `debiaslab bench {suite_name} --out {out}` ({len(result.states)} planned: {counts};"
        " `skipped` = finished earlier and reused). "
        f"Machine: {machine}. Runs finished between {finished[0][:10]} and {finished[-1][:10]} "
        f"(code at commit {_commit()} when this block was written). Full report: `{out / 'report.md'}`.",
        "",
    ]
    pivots = {k: v for k, v in result.tables.items() if k != "results"}
    for title, table in pivots.items():
        lines += [f"**{title}** (%, mean ± std over n seeds; [published, ours − published] where a paper has it)"]
        lines += ["", table, ""]
    missing = [s for s in result.states if s.status not in ("finished", "skipped")]
    if missing:
        per_label: dict[str, int] = {}
        for s in missing:
            per_label[s.run.label] = per_label.get(s.run.label, 0) + 1
        lines.append(
            f"Not in the table yet ({len(missing)} of {len(result.states)} runs; status in `{out / 'summary.json'}`): "
            + ", ".join(f"{label} {n}" for label, n in per_label.items())
            + "."
        )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _final(run_dir: Path) -> dict:
    """The run's ``final.json`` (empty when it cannot be read: the report already lists such runs)."""
    try:
        return json.loads((run_dir / "final.json").read_text())
    except (OSError, ValueError):
        return {}


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def splice(readme: str, suite_name: str, text: str, path: Path) -> str:
    start, end = f"<!-- bench:{suite_name}:start -->", f"<!-- bench:{suite_name}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"{path}: no block {start} ... {end} to replace; add the two markers where it belongs")
    return pattern.sub(lambda _: f"{start}\n{text}{end}", readme, count=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", help="a shipped suite name or a suite file")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="the suite's output folder (default runs)")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)
    text = block(args.suite, args.out)
    readme = args.readme.read_text()
    args.readme.write_text(splice(readme, Path(args.suite).stem, text, args.readme))
    sys.stderr.write(f"wrote the {args.suite} block of {args.readme}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
