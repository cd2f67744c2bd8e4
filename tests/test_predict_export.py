"""Using a finished run: ``predict`` (image folders, .npz, CSV of texts) prepares inputs as evaluation did,
``export`` (ONNX, TorchScript) is checked by running the export, ``evaluate --dataset/--split/--data-opt`` scores
a run elsewhere; each with its one-line errors."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from debiaslab.cli.main import main
from debiaslab.data import build_dataset
from debiaslab.engine.trainer import Trainer
from debiaslab.run.train import load_run_model
from fixture_trees import make_class_folders, write_csv
from text_fixtures import NLI_PAIRS, synthetic_civil_rows, write_civilcomments, write_multinli

pytestmark = pytest.mark.usefixtures("one_thread")

#: resize 8x8 -> 6x6 and ImageNet normalisation: predict must replay both
DATA_OPTS = ["root=pets", "attributes=attrs.csv", "image_size=6", "normalize=imagenet", "preload=false"]
TINY = ["--no-progress", "--epochs", "2", "--batch-size", "8", "--hp", "model=mlp",
        "--hp", "model_kwargs={width: 8, depth: 1}"]  # fmt: skip


def one_line_error(capsys) -> str:
    """The error line, which ends stderr (warnings logged while the data was built may come before it)."""
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("error:") and "Traceback" not in err, err
    return last


def read_predictions(path: Path) -> dict[str, list[float]]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    k = sum(1 for c in rows[0] if c.startswith("prob_"))
    return {r["id"]: [float(r[f"prob_{j}"]) for j in range(k)] for r in rows}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished ERM run on a class-folder dataset (attributes from a CSV); returns (data root, run dir)."""
    root = tmp_path_factory.mktemp("images")
    rows = make_class_folders(root / "pets")
    write_csv(root / "attrs.csv", ["path", "attribute"], rows)
    out = root / "run"
    opts = [a for o in DATA_OPTS for a in ("--data-opt", o)]
    code = main(["train", "--method", "erm", "--dataset", "class_folders", "--data-root", str(root), *opts,
                 "--out", str(out), *TINY])  # fmt: skip
    assert code == 0
    return root, out


def evaluation_probs(root: Path, run: Path) -> dict[str, list[float]]:
    """Softmax of the run's model on its test split, as evaluation prepares it, keyed by image path."""
    bundle = build_dataset("class_folders", root, root / "cache", root="pets", attributes="attrs.csv",
                           image_size=6, normalize="imagenet", preload=False)  # fmt: skip
    model = load_run_model(run).eval()
    probs = torch.softmax(Trainer(device="cpu", progress=False).predict(model, bundle.test), dim=1)
    paths = [Path(p).relative_to(root / "pets").as_posix() for p in bundle.test.loader.paths]
    return dict(zip(paths, probs.tolist()))


def test_predict_on_an_image_folder_matches_evaluation(image_run, tmp_path: Path, capsys) -> None:
    root, run = image_run
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), str(root / "pets"), "--out", str(out)]) == 0
    assert "32 predictions written" in capsys.readouterr().out
    got = read_predictions(out)
    expected = evaluation_probs(root, run)
    assert len(got) == 32 and set(expected) <= set(got)
    for path, probs in expected.items():
        assert got[path] == pytest.approx(probs, abs=1e-5)
        assert sum(got[path]) == pytest.approx(1.0, abs=1e-4)
    header = out.read_text().splitlines()[0]
    assert header == "id,prediction,prediction_name,prob_0,prob_1"
    with out.open() as fh:
        row = next(csv.DictReader(fh))
    assert row["prediction_name"] == ("cat", "dog")[int(row["prediction"])]


def test_predict_on_an_npz_matches_the_folder(image_run, tmp_path: Path) -> None:
    root, run = image_run
    main(["predict", str(run), str(root / "pets"), "--out", str(tmp_path / "f.csv")])
    folder = read_predictions(tmp_path / "f.csv")
    bundle = build_dataset("class_folders", root, root / "cache", root="pets", image_size=6, preload=False)
    stored = bundle.train.loader(torch.arange(3))  # uint8 (3, 3, 6, 6): the dataset's stored form
    np.savez(tmp_path / "x.npz", x=stored.numpy())
    assert main(["predict", str(run), str(tmp_path / "x.npz"), "--out", str(tmp_path / "n.csv")]) == 0
    got = read_predictions(tmp_path / "n.csv")
    paths = [Path(p).relative_to(root / "pets").as_posix() for p in bundle.train.loader.paths[:3]]
    for i, path in enumerate(paths):
        assert got[str(i)] == pytest.approx(folder[path], abs=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("missing_run", r"run directory .*nope does not exist"),
        ("unfinished_run", r"holds no finished run \(final.json missing\)"),
        ("missing_input", r"input .*none.npz does not exist"),
        ("txt_input", r"expected a folder of images, an .npz or a .csv file, not .txt"),
        ("wrong_shape", r"x has shape \(2, 3, 8, 8\); the run's model expects \(N, 3, 6, 6\)"),
        ("float_pixels", r"x has dtype float32; the run's model expects uint8 pixels"),
        ("no_x", r"has no array 'x' \(it holds images\)"),
        ("text_csv", r"is a CSV of texts, but the run's model takes image inputs of shape \(3, 6, 6\)"),
        ("empty_folder", r"holds no image files"),
    ],
)
def test_predict_errors_are_one_line(image_run, tmp_path: Path, make: str, message: str, capsys) -> None:
    _, run = image_run
    target = run
    inp = tmp_path / "x.npz"
    if make == "missing_run":
        target = tmp_path / "nope"
        np.savez(inp, x=np.zeros((2, 3, 6, 6), np.uint8))
    elif make == "unfinished_run":
        target = tmp_path / "half"
        target.mkdir()
        (target / "config.yaml").write_text("run: {}\n")
        np.savez(inp, x=np.zeros((2, 3, 6, 6), np.uint8))
    elif make == "missing_input":
        inp = tmp_path / "none.npz"
    elif make == "txt_input":
        inp = tmp_path / "x.txt"
        inp.write_text("hello")
    elif make == "wrong_shape":
        np.savez(inp, x=np.zeros((2, 3, 8, 8), np.uint8))
    elif make == "float_pixels":
        np.savez(inp, x=np.zeros((2, 3, 6, 6), np.float32))
    elif make == "no_x":
        np.savez(inp, images=np.zeros((2, 3, 6, 6), np.uint8))
    elif make == "text_csv":
        inp = write_csv(tmp_path / "t.csv", ["text"], [["hello"]])
    elif make == "empty_folder":
        inp = tmp_path / "empty"
        inp.mkdir()
    assert main(["predict", str(target), str(inp)]) == 2
    assert re.search(message, one_line_error(capsys))


def test_predict_on_a_csv_of_texts_uses_the_runs_encoder(tmp_path: Path) -> None:
    write_civilcomments(tmp_path / "civilcomments_v1.0", synthetic_civil_rows(120))
    run = tmp_path / "run"
    code = main(["train", "--method", "erm", "--dataset", "civilcomments", "--data-root", str(tmp_path),
                 "--cache-dir", str(tmp_path / "c"), "--data-opt", "encoder=test-hash", "--out", str(run),
                 "--no-progress", "--epochs", "1", "--hp", "model_kwargs={width: 8, depth: 1}"])  # fmt: skip
    assert code == 0
    bundle = build_dataset("civilcomments", tmp_path, tmp_path / "c", encoder="test-hash")
    test_rows = [r for r in synthetic_civil_rows(120) if r[0] == "test"]
    table = write_csv(tmp_path / "texts.csv", ["id", "text"], [[f"c{i}", r[3]] for i, r in enumerate(test_rows)])
    assert main(["predict", str(run), str(table), "--out", str(tmp_path / "p.csv")]) == 0
    got = read_predictions(tmp_path / "p.csv")
    model = load_run_model(run).eval()
    expected = torch.softmax(Trainer(device="cpu", progress=False).predict(model, bundle.test), dim=1)
    assert len(got) == len(bundle.test) == len(test_rows)
    for i in range(len(test_rows)):
        assert got[f"c{i}"] == pytest.approx(expected[i].tolist(), abs=1e-5)


def test_predict_on_sentence_pairs_reads_both_columns(tmp_path: Path, capsys) -> None:
    write_multinli(tmp_path / "multinli")
    run = tmp_path / "run"
    code = main(["train", "--method", "erm", "--dataset", "multinli", "--data-root", str(tmp_path),
                 "--cache-dir", str(tmp_path / "c"), "--data-opt", "encoder=test-hash", "--out", str(run),
                 "--no-progress", "--epochs", "1", "--hp", "model_kwargs={width: 8, depth: 1}"])  # fmt: skip
    assert code == 0
    bundle = build_dataset("multinli", tmp_path, tmp_path / "c", encoder="test-hash")
    pairs = [p for p in NLI_PAIRS[6:] if p[2] != "-"]  # the test split, without the unlabelled pair
    table = write_csv(tmp_path / "pairs.csv", ["premise", "hypothesis"], [[p, h] for p, h, _, _ in pairs])
    assert main(["predict", str(run), str(table), "--out", str(tmp_path / "p.csv")]) == 0
    got = read_predictions(tmp_path / "p.csv")
    model = load_run_model(run).eval()
    expected = torch.softmax(Trainer(device="cpu", progress=False).predict(model, bundle.test), dim=1)
    assert len(got) == len(bundle.test)
    assert torch.allclose(torch.tensor([got[str(i)] for i in range(len(got))]), expected, atol=1e-5)
    write_csv(tmp_path / "one.csv", ["text"], [["a premise alone"]])
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "one.csv")]) == 2
    assert "has no column 'premise', 'hypothesis'" in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------- export
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_is_checked_against_pytorch(image_run, tmp_path: Path, fmt: str, capsys) -> None:
    _, run = image_run
    out = tmp_path / f"m.{fmt}"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    text = capsys.readouterr().out.replace("\n", " ")
    assert "max abs difference" in text and "tolerance 0.0001" in text
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary or external-data files left
    model = load_run_model(run).eval()
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():
        ref = model(x).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out)).eval()(x).numpy()
    assert np.abs(got - ref).max() < 1e-4


def test_export_finds_a_wrong_export(image_run, tmp_path: Path, monkeypatch, capsys) -> None:
    """The check runs the export: an exporter whose file computes something else is an error, and no file stays."""
    import debiaslab.deploy.export as export

    real = export._export_torchscript
    monkeypatch.setattr(export, "_export_torchscript", lambda m, x, p: lambda t: real(m, x, p)(t) + 0.01)
    _, run = image_run
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    assert "differs from the PyTorch model by up to 0.01" in one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_export_without_onnx_names_the_extra(image_run, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    _, run = image_run
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'debiaslab[export]'" in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------- evaluate
def test_evaluate_one_split_and_other_data(image_run, tmp_path: Path, capsys) -> None:
    root, run = image_run
    assert main(["evaluate", str(run), "--split", "val", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "class_folders" in out and " val: " in out and " test: " not in out
    # the same images as an arrays dataset (uint8, 3x6x6, two classes): same shapes, so it scores
    bundle = build_dataset("class_folders", root, root / "cache", root="pets", image_size=6, preload=False)
    x = bundle.test.loader(torch.arange(len(bundle.test))).numpy()
    np.savez(tmp_path / "d.npz", x=x, y=bundle.test.y.numpy(), split=np.arange(len(x)) % 3)
    assert main(["evaluate", str(run), "--dataset", "arrays", "--data-opt", f"path={tmp_path / 'd.npz'}"]) == 0
    assert "arrays" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("x_shape", "classes", "message"),
    [
        ((30, 3, 8, 8), 2, r"has inputs of shape \(3, 8, 8\) but the model of .* takes \(3, 6, 6\)"),
        ((30, 3, 6, 6), 3, r"has 3 classes but the model of .* predicts 2"),
    ],
)
def test_evaluate_on_mismatched_data_is_one_line(image_run, tmp_path: Path, x_shape, classes, message, capsys):
    _, run = image_run
    n = x_shape[0]
    np.savez(tmp_path / "d.npz", x=np.zeros(x_shape, np.uint8), y=np.arange(n) % classes, split=np.arange(n) % 3)
    assert main(["evaluate", str(run), "--dataset", "arrays", "--data-opt", f"path={tmp_path / 'd.npz'}"]) == 2
    assert re.search(message, one_line_error(capsys))


def test_evaluate_options_layer_on_the_runs_own(image_run, capsys) -> None:
    """Same dataset: the run's options (root, attributes, image_size=6, ...) stay; only the given one changes."""
    root, run = image_run
    assert main(["evaluate", str(run), "--data-root", str(root), "--data-opt", "image_size=8"]) == 2
    assert "dataset 'class_folders' has inputs of shape (3, 8, 8)" in one_line_error(capsys)
    assert main(["evaluate", str(run), "--data-root", str(root), "--data-opt", "normalize=none"]) == 0
    captured = capsys.readouterr()
    assert "prepares its inputs differently" in captured.err
    out = captured.out.replace("\n", " ")
    assert "attributes=attrs.csv" in out and "image_size=6" in out and "normalize=none" in out
