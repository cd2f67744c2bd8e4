"""``debiaslab audit``: the page and its figures for a run on tiny coloured images, a dataset audited alone (with
and without attribute labels), the reference being JTT's identification model, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from debiaslab.audit import figures, page, panels
from debiaslab.audit.reference import biased_reference, logits_of
from debiaslab.cli.main import main
from debiaslab.engine.trainer import Trainer
from debiaslab.methods.jtt import JTT
from debiaslab.run.train import RunConfig, train_run
from toys import make_split, tiny_mlp

pytestmark = pytest.mark.usefixtures("one_thread")

N_CLASSES, SIDE = 3, 8
COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 40, 230]], dtype=np.float64)
SPLITS = {"train": (240, 0.9), "val": (90, 1 / 3), "test": (90, 1 / 3)}  # size, share with the aligned colour


def coloured_bars(seed: int = 0, attrs: bool = True) -> dict[str, np.ndarray]:
    """Class c is a bar in rows 2c..2c+1 (the shape); the bar takes the colour of the attribute, the class's own
    colour on the ``SPLITS`` share of each split (the shortcut)."""
    g = np.random.default_rng(seed)
    xs, ys, attr, split = [], [], [], []
    for name, (n, aligned) in SPLITS.items():
        y = np.arange(n) % N_CLASSES
        a = np.where(g.random(n) < aligned, y, (y + g.integers(1, N_CLASSES, n)) % N_CLASSES)
        x = g.integers(0, 30, (n, 3, SIDE, SIDE)).astype(np.float64)
        for i in range(n):
            x[i, :, 2 * y[i] + 1 : 2 * y[i] + 3, 1:-1] = COLOURS[a[i]][:, None, None]
        xs.append(x.astype(np.uint8))
        ys.append(y)
        attr.append(a)
        split += [name] * n
    out = {"x": np.concatenate(xs), "y": np.concatenate(ys), "split": np.array(split)}
    if attrs:
        out["attr"] = np.concatenate(attr)
    return out


@pytest.fixture(scope="module")
def bars(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "bars.npz"
    np.savez(path, **coloured_bars())
    return path


@pytest.fixture(scope="module")
def run_dir(bars: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "erm"
    cfg = RunConfig(
        method="erm",
        dataset="arrays",
        dataset_options={"path": str(bars)},
        hparams={**tiny_mlp(), "epochs": 2},
        out=str(out),
        progress=False,
    )
    train_run(cfg)
    return out


@pytest.fixture(scope="module")
def audited(run_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audit")
    assert main(["audit", str(run_dir), "--out", str(out), "--threads", "1"]) == 0
    return out


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_audit_of_a_run_writes_the_page_and_its_figures(audited: Path, run_dir: Path) -> None:
    facts = json.loads((audited / "audit.json").read_text())
    k, m = 6, 2  # hardest / easiest per class; of those, with their gradients
    expected = {
        "examples.png": figures.grid_px(N_CLASSES, 2 * k, (SIDE, SIDE), group=k),
        # mean image, then |g| and g of the reference and of the run
        "saliency_mean.png": figures.grid_px(5, N_CLASSES, (SIDE, SIDE)),
        # per class: m hardest and m easiest, each as image | reference | run
        "saliency_examples.png": figures.grid_px(N_CLASSES, 2 * m * 3, (SIDE, SIDE), group=3),
    }
    for name, (width, height) in expected.items():
        pixels = png(audited / name)
        assert pixels.shape == (height, width, 3), name
        assert pixels.std() > 10, f"{name} is blank"
    for name in ("counts.png", "group_accuracy.png"):
        pixels = png(audited / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 10, name
    text = (audited / "audit.md").read_text()
    for name in (*expected, "counts.png", "group_accuracy.png"):
        assert f"]({name})" in text  # linked beside the page
    assert facts["figures"] == {
        "counts": "counts.png",
        "examples": "examples.png",
        "saliency_mean": "saliency_mean.png",
        "saliency_examples": "saliency_examples.png",
        "group_accuracy": "group_accuracy.png",
    }
    # the run's premise checks, from its final.json
    checks = json.loads((run_dir / "final.json").read_text())["health"]
    assert checks and "## Health checks" in text
    assert all(f"| {c['name']} | {c['status']} |" in text for c in checks)
    assert "saliency_features" not in facts["figures"]


def test_audit_facts_match_the_data_and_the_run(audited: Path, run_dir: Path, bars: Path) -> None:
    facts = json.loads((audited / "audit.json").read_text())
    data = coloured_bars()
    train = data["split"] == "train"
    y, attr = data["y"][train], data["attr"][train]
    assert facts["groups"]["source"] == "attributes"
    expected = np.zeros((N_CLASSES, N_CLASSES), dtype=int)
    np.add.at(expected, (y, attr), 1)
    assert facts["groups"]["counts"]["train"] == expected.tolist()
    assert facts["groups"]["minority_train"] == int((y != attr).sum())
    for c in range(N_CLASSES):  # hardest first, easiest first, all of class c
        hard, easy = facts["examples"]["hardest"][c], facts["examples"]["easiest"][c]
        assert all(y[i] == c for i in hard + easy) and len(hard) == len(easy) == 6
        hard_loss, easy_loss = facts["examples"]["hardest_loss"][c], facts["examples"]["easiest_loss"][c]
        assert hard_loss == sorted(hard_loss, reverse=True) and easy_loss == sorted(easy_loss)
        assert hard_loss[-1] >= easy_loss[-1]
    # the run's per-group validation numbers are those its own run record holds
    final = json.loads((run_dir / "final.json").read_text())
    for key in ("accuracy", "worst_group", "unbiased"):
        assert facts["val"]["run"]["metrics"][key] == pytest.approx(final["metrics"]["val"][key])
    errors = facts["reference_errors"]
    assert errors["n"] == int(train.sum()) and 0 <= errors["n_wrong"] <= errors["n"]
    quality = facts["inference_quality"]["reference (error_set)"]  # its error set against the attributes
    assert quality["minority"] == errors["n_wrong"] and quality["conflicting"] == int((y != attr).sum())
    assert facts["reference"]["settings"]["model"] == "mlp"  # the run's architecture
    assert facts["reference"]["settings"]["model_kwargs"] == tiny_mlp()["model_kwargs"]


def test_health_checks_are_shown_when_the_run_has_them(audited: Path) -> None:
    facts = json.loads((audited / "audit.json").read_text())
    facts["health"] = [
        {"name": "error_set_size", "status": "warn", "message": "the error set is 0.1 % | of the data"},
        {"name": "ess", "status": "pass", "message": "effective sample size 812"},
    ]
    text = page.audit_markdown(facts)
    assert "| error_set_size | warn | the error set is 0.1 % \\| of the data |" in text
    assert "Health checks: 2, not passed: error_set_size" in text


def test_dataset_audit_with_a_finished_run_as_reference(bars: Path, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    code = main(
        ["audit", "--dataset", "arrays", "--data-opt", f"path={bars}", "--reference", str(run_dir),
         "--out", str(out), "--threads", "1"]
    )  # fmt: skip
    assert code == 0
    facts = json.loads((out / "audit.json").read_text())
    assert "run" not in facts["subject"] and list(facts["val"]) == ["reference"]
    assert str(run_dir) in facts["reference"]["source"]
    final = json.loads((run_dir / "final.json").read_text())
    assert facts["val"]["reference"]["metrics"]["accuracy"] == pytest.approx(final["metrics"]["val"]["accuracy"])
    # mean image, |g| and g of the reference alone
    assert png(out / "saliency_mean.png").shape[:2] == figures.grid_px(3, N_CLASSES, (SIDE, SIDE))[::-1]
    assert "Health checks" not in (out / "audit.md").read_text()


def test_many_classes_draw_the_first_ones(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(panels, "MAX_CLASSES", 2)
    out = tmp_path / "audit"
    assert main(["audit", str(run_dir), "--reference", str(run_dir), "--out", str(out), "--threads", "1"]) == 0
    assert png(out / "examples.png").shape[:2] == figures.grid_px(2, 12, (SIDE, SIDE), group=6)[::-1]
    assert "The figures show classes 0 to 1 of 3" in (out / "audit.md").read_text()
    facts = json.loads((out / "audit.json").read_text())
    assert len(facts["examples"]["hardest"]) == 3  # the numbers keep every class


def test_features_without_attributes_get_pseudo_groups(tmp_path: Path) -> None:
    """Inputs that are not images: no image grids, a classes x features saliency map; no attribute labels: the
    groups are the reference's right / wrong split, and only the run's accuracy on them is drawn."""
    g = np.random.default_rng(0)
    y = (np.arange(120) // 4) % 2  # both classes in every split
    x = g.normal(size=(120, 6)).astype(np.float32)
    x[:, 0] += 2 * y - 1
    np.savez(tmp_path / "f.npz", x=x, y=y, split=np.array(["train", "train", "val", "test"] * 30))
    run = tmp_path / "run"
    options = {"path": str(tmp_path / "f.npz")}
    train_run(RunConfig("erm", "arrays", options, {**tiny_mlp(), "epochs": 1}, out=str(run), progress=False))
    out = tmp_path / "audit"
    assert main(["audit", str(run), "--reference-hp", "batch_size=16", "--out", str(out), "--threads", "1"]) == 0
    facts = json.loads((out / "audit.json").read_text())
    assert set(facts["figures"]) == {"counts", "saliency_features", "group_accuracy"}
    assert facts["groups"]["source"] == "inferred" and facts["inference_quality"] == {}
    assert facts["groups"]["names"] == ["reference right", "reference wrong"]
    train_counts = np.array(facts["groups"]["counts"]["train"])
    assert train_counts.sum() == 60 and train_counts[:, 1].sum() == facts["reference_errors"]["n_wrong"]
    reference = facts["val"]["reference"]["metrics"]
    assert reference["aligned"] == 1.0 and reference["conflicting"] == 0.0  # right / wrong by construction
    assert facts["reference"]["settings"]["batch_size"] == 16
    assert png(out / "saliency_features.png").std() > 10
    assert "100 % and 0 % by construction" in (out / "audit.md").read_text()
    assert facts["groups"]["label"] == "error_set pseudo-groups of the reference"


def test_another_inferrer_gives_the_reference_and_its_groups(tmp_path: Path) -> None:
    """``--inferrer gce`` on data without attributes: the GCE model is the reference, its pseudo-groups are shown."""
    g = np.random.default_rng(1)
    y = (np.arange(80) // 4) % 2
    x = g.normal(size=(80, 3, 4, 4)).astype(np.float32)
    x[:, 0] += (2 * y - 1)[:, None, None]
    np.savez(tmp_path / "i.npz", x=x, y=y, split=np.array(["train", "train", "val", "test"] * 20))
    out = tmp_path / "audit"
    code = main(
        ["audit", "--dataset", "arrays", "--data-opt", "path=i.npz", "--data-root", str(tmp_path), "--inferrer",
         "gce", "--reference-hp", "epochs=2", "--reference-hp", "batch_size=16", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    facts = json.loads((out / "audit.json").read_text())
    assert facts["reference"]["settings"]["inferrer"] == "gce"
    assert facts["groups"]["source"] == "inferred" and facts["groups"]["names"][0] == "pseudo 0"
    assert set(facts["figures"]) == {"counts", "examples", "saliency_mean", "saliency_examples"}
    text = (out / "audit.md").read_text()
    assert "gce pseudo-groups of the reference" in text


def test_the_reference_is_jtts_identification_model() -> None:
    """Same data, seed and hyperparameters: the reference's training errors are JTT's error set."""
    train, val = make_split(256, 0, "train", 0.1), make_split(128, 1, "val", 0.5)
    hp = {**tiny_mlp(), "identify_epochs": 2, "identify_lr": 3e-3, "epochs": 1}
    jtt = JTT(**hp).fit(train, val, trainer=Trainer(seed=3, progress=False))
    trainer = Trainer(seed=3, progress=False)
    reference = biased_reference(train, val, trainer, dataset="toy", hparams=hp)
    wrong = torch.nonzero(logits_of(reference.model, train, trainer).argmax(dim=1) != train.y).flatten()
    assert jtt.error_set_ is not None and jtt.error_set_.numel() > 0
    assert torch.equal(wrong, jtt.error_set_)
    assert torch.equal(torch.nonzero(reference.groups.splits["train"].minority).flatten(), jtt.error_set_)
    assert reference.settings["epochs"] == 2 and reference.settings["lr"] == 3e-3


def test_groups_file_groups_are_shown(bars: Path, run_dir: Path, tmp_path: Path, capsys) -> None:
    from debiaslab.inference.groups_file import read_groups
    from debiaslab.inference.pipeline import infer_groups

    path = tmp_path / "groups.npz"
    hp = {**tiny_mlp(), "identify_epochs": 1}
    infer_groups("error_set", "arrays", path, dataset_options={"path": str(bars)}, hparams=hp, seed=1)
    out = tmp_path / "audit"
    code = main(["audit", str(run_dir), "--groups", str(path), "--reference", str(run_dir), "--out", str(out)])
    assert code == 0
    facts = json.loads((out / "audit.json").read_text())
    groups = read_groups(path)
    assert facts["groups"]["source"] == "file" and facts["groups"]["label"].startswith("groups file groups.npz")
    data = coloured_bars()
    y = data["y"][data["split"] == "train"]
    expected = np.zeros((N_CLASSES, 2), dtype=int)
    np.add.at(expected, (y, groups.splits["train"].pseudo.numpy()), 1)
    assert facts["groups"]["counts"]["train"] == expected.tolist()
    assert set(facts["inference_quality"]) == {"reference (error_set)", facts["groups"]["label"]}
    assert set(facts["val"]) == {"reference", "run"}  # the file's groups are not the reference's own
    # a groups file of other data: one line, before anything is trained
    other = tmp_path / "other.npz"
    np.savez(other, **coloured_bars(seed=1))
    options = {"path": str(other)}
    infer_groups("error_set", "arrays", tmp_path / "g2.npz", dataset_options=options, hparams=hp)
    capsys.readouterr()
    assert main(["audit", str(run_dir), "--groups", str(tmp_path / "g2.npz"), "--out", str(tmp_path / "x")]) == 2
    assert "was inferred with dataset options" in capsys.readouterr().err


def test_one_line_errors(run_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["audit", str(run_dir), "--dataset", "arrays"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["audit"]) == 2
    assert "needs a finished run directory or --dataset" in capsys.readouterr().err
    monkeypatch.setattr(figures, "matplotlib_available", lambda: False)
    assert main(["audit", str(run_dir), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "pip install 'debiaslab[plots]'" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()
