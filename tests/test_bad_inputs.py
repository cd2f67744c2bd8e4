"""Every bad input of a user's second day is one ``error:`` line (exit status 2) that names the thing and what was
expected, and nothing is accepted silently: bad arrays, contradicting flags, unwritable outputs, misspelt names.

Runs train ERM for one epoch on a tiny ``arrays`` dataset (a few dozen 5-feature examples).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from debiaslab.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--epochs", "1", "--batch-size", "16", "--hp", "model_kwargs={width: 8, depth: 1}", "--no-progress"]


def save_arrays(path: Path, n: int = 48, **change: object) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    data = {"x": rng.normal(size=(n, 5)).astype(np.float32) + y[:, None], "y": y, "attr": (np.arange(n) // 4) % 2}
    data.update(change)
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


def train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={data}", "--out", str(out),
            *TINY, *extra]  # fmt: skip


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    out = root / "run"
    assert main(train(save_arrays(root / "d.npz"), out)) == 0
    return out


def _x_inf() -> np.ndarray:
    x = np.zeros((48, 5), dtype=np.float32)
    x[7, 2] = np.inf
    return x


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"x": np.arange(48.0)}, r"x has shape \(48,\); expected the examples on its first dimension"),
        ({"y": np.r_[np.zeros(47, dtype=np.int64), -1]}, r"y\[47\]: label -1 is negative; expected an id from 0"),
        ({"x": _x_inf()}, r"x\[7\] holds NaN or infinite values \(1 example\(s\) do\)"),
    ],
    ids=["x-1d", "label-minus-one", "inf-input"],
)
def test_bad_arrays_are_one_line(tmp_path: Path, capsys, change: dict, expected: str) -> None:
    data = save_arrays(tmp_path / "d.npz", **change)
    assert main(train(data, tmp_path / "run")) == 2
    assert re.search(expected, one_line_error(capsys))
    assert not (tmp_path / "run").exists()


def test_a_text_file_named_npz_says_it_is_not_an_npz(tmp_path: Path, capsys) -> None:
    (tmp_path / "d.npz").write_text("x,y\n1,0\n")
    assert main(train(tmp_path / "d.npz", tmp_path / "run")) == 2
    err = one_line_error(capsys)
    assert "is not an .npz archive" in err and "pickle" not in err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--threads", "0"], "argument --threads: 0 must be at least 1"),
        (["--resume", "--overwrite"], "--overwrite: not allowed with argument --resume"),
        (["--hp", "epochs=1.5"], "both set epochs"),
        (["--hp", "lrr=0.1"], "has no hyperparameter 'lrr'; expected some of: .* Did you mean lr"),
        (["--method", "ermm"], "unknown method 'ermm'.* Did you mean erm"),
        (["--data-opt", "n_clases=2"], "has no option 'n_clases'.* Did you mean n_classes"),
    ],
    ids=["threads-0", "resume-and-overwrite", "epochs-twice", "hp-typo", "method-typo", "option-typo"],
)
def test_contradicting_or_misspelt_flags_are_one_line(tmp_path: Path, capsys, extra: list[str], expected: str) -> None:
    assert main(train(save_arrays(tmp_path / "d.npz"), tmp_path / "run", *extra)) == 2
    assert re.search(expected, one_line_error(capsys))
    assert not (tmp_path / "run").exists()  # checked before the run directory is made


def test_method_names_ignore_case(tmp_path: Path) -> None:
    args = train(save_arrays(tmp_path / "d.npz"), tmp_path / "run")
    args[args.index("erm")] = "ERM"
    assert main(args) == 0
    assert "method: erm" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_an_unwritable_out_is_one_line(finished_run: Path, tmp_path: Path, capsys, command: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "sub" / "out.bin"
    if command == "predict":
        np.savez(tmp_path / "new.npz", x=np.zeros((3, 5), dtype=np.float32))
        args = ["predict", str(finished_run), str(tmp_path / "new.npz"), "--out", str(target)]
    else:
        pytest.importorskip("torch.jit")
        args = ["export", str(finished_run), "--format", "torchscript", "--out", str(target)]
    assert main(args) == 2
    assert f"cannot write {target}" in one_line_error(capsys)


def test_predict_refuses_nonfinite_inputs(finished_run: Path, tmp_path: Path, capsys) -> None:
    x = np.zeros((4, 5), dtype=np.float32)
    x[2, 0] = np.nan
    np.savez(tmp_path / "new.npz", x=x)
    assert main(["predict", str(finished_run), str(tmp_path / "new.npz"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "x[2] holds NaN or infinite values" in one_line_error(capsys)
