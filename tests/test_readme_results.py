"""benchmarks/readme_results.py: the README block is replaced between its markers, and a README without them is
a one-line error naming the file and the markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from toys import load_benchmark_script


def load_script():
    return load_benchmark_script("readme_results")


def test_splice_replaces_only_the_marked_block() -> None:
    splice = load_script().splice
    readme = "intro\n<!-- bench:cmnist:start -->\nold\n<!-- bench:cmnist:end -->\nrest\n"
    out = splice(readme, "cmnist", "new table\n", Path("README.md"))
    assert out == "intro\n<!-- bench:cmnist:start -->\nnew table\n<!-- bench:cmnist:end -->\nrest\n"


def test_missing_markers_name_the_file_and_the_block() -> None:
    splice = load_script().splice
    with pytest.raises(SystemExit, match=r"docs/R\.md: no block <!-- bench:quick:start --> \.\.\. "):
        splice("no markers here\n", "quick", "table\n", Path("docs/R.md"))
