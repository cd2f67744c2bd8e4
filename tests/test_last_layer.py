"""CRT, ReWeightCRT and AFR: the base model is the ``erm`` method's and stays frozen, the head starts fresh (CRT) or
at the ERM head (AFR), balancing and AFR weights against hand computations, AFR's held-out split and full-batch
schedule, ``base_run``, presets pinned to SubpopBench and the AFR code, and the labels each needs."""

from __future__ import annotations

import pytest
import torch

from debiaslab.engine.checkpoint import clone_state, save_model_file
from debiaslab.engine.sampling import WeightedSampler
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods import get_method
from debiaslab.methods.afr import afr_weights
from debiaslab.methods.crt import unit_weights
from toys import NoTrainingTrainer, RecordingTrainer, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


class FinalStates(RecordingTrainer):
    """Also keeps every stage's weights as the stage hands them back (before a method changes the model)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.final: dict = {}

    def run_stage(self, name, build, train, val=None):
        stage, result = super().run_stage(name, build, train, val)
        self.final[name] = clone_state(stage.modules)
        return stage, result


@pytest.fixture(scope="module")
def toy():
    return toy_splits(256, 128, 0.1, n_features=6)


def test_unit_weights_and_afr_weights_by_hand() -> None:
    assert torch.allclose(unit_weights(torch.tensor([0, 0, 0, 1]), 3), torch.tensor([0.5, 1.5, 0.0]))
    logits, y = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 0, 1])
    p = torch.tensor([0.5, torch.softmax(torch.tensor([10.0, 0.0]), 0)[0].item(), 0.5])
    raw = torch.exp(-2.0 * p) / torch.tensor([2.0, 2.0, 1.0])  # class-balanced: 1/n_y
    assert torch.allclose(afr_weights(logits, y, 2.0, 2), raw / raw.sum())
    assert torch.allclose(afr_weights(logits, y, 0.0, 2, balance_classes=False), torch.full((3,), 1 / 3))


def test_crt_retrains_a_fresh_head_on_the_frozen_erm_model(toy) -> None:
    train, val = toy
    erm = get_method("erm")(**tiny_mlp(8), epochs=2, selection="last").fit(
        train, val, trainer=Trainer(progress=False, seed=0)
    )
    trainer = FinalStates(seed=0)
    crt = get_method("crt")(**tiny_mlp(8), epochs=2).fit(train, val, trainer=trainer)
    body = {k: v for k, v in crt.model_.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(v, erm.model_.state_dict()[k]) for k, v in body.items())  # the erm method's features
    assert not torch.equal(trainer.initial["crt"]["weight"], trainer.final["erm"]["head.weight"])  # a fresh head
    assert torch.equal(crt.model_.head.weight, trainer.final["crt"]["weight"])  # the selected head is deployed
    stage = trainer.stages["crt"]
    assert isinstance(stage.sampler, WeightedSampler) and len(stage.sampler) == len(train)
    expected = 1.0 / train.class_counts.double()[train.y]
    assert torch.allclose(stage.sampler.weights / stage.sampler.weights.sum(), expected / expected.sum())
    assert [s.name for s in crt.fit_result_.stages] == ["erm", "crt"] and not crt.deploys_last_stage


def test_group_versions_balance_groups_and_need_training_attributes(toy) -> None:
    train, val = toy
    unlabeled, _ = toy_splits(64, 32, 0.1, n_features=6, attrs=False)
    for name in ("crt_group", "reweight_crt_group"):
        with pytest.raises(MissingLabelsError, match=name):
            get_method(name)(**tiny_mlp(8), epochs=1).fit(unlabeled, val, trainer=NoTrainingTrainer())
    trainer = RecordingTrainer(seed=0)
    get_method("crt_group")(**tiny_mlp(8), epochs=1).fit(train, val, trainer=trainer)
    drawn = trainer.stages["crt"].sampler.weights
    per_group = torch.zeros(train.n_groups, dtype=drawn.dtype).index_add(0, train.group, drawn)
    present = train.group_counts > 0
    assert torch.allclose(per_group[present], per_group[present][0].expand(int(present.sum())))


def test_reweight_crt_weights_the_loss_by_inverse_class_count(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer(seed=0)
    fitted = get_method("reweight_crt")(**tiny_mlp(8), epochs=1, head_epochs=2, head_lr=0.05).fit(
        train, val, trainer=trainer
    )
    assert trainer.epochs_run["crt"] == 2 and fitted.fit_result_.extras["scheme"] == "reweight"


def test_crt_reads_a_finished_base_run_without_training_it(toy, tmp_path) -> None:
    train, val = toy
    erm = get_method("erm")(**tiny_mlp(8), epochs=1).fit(train, val, trainer=Trainer(progress=False, seed=0))
    save_model_file(tmp_path / "model.pt", erm.model_, erm.fit_result_.model_spec)
    trainer = RecordingTrainer(seed=0)
    crt = get_method("crt")(base_run=str(tmp_path), epochs=1).fit(train, val, trainer=trainer)
    assert list(trainer.stages) == ["crt"] and crt.fit_result_.extras["base"] == f"run {tmp_path}"
    with pytest.raises(ConfigError, match=r"no model\.pt"):
        get_method("crt")(base_run=str(tmp_path / "missing")).fit(train, val)


def test_afr_holds_out_a_fifth_and_starts_from_the_erm_head(toy) -> None:
    train, val = toy
    trainer = FinalStates(seed=0)
    afr = get_method("afr")(**tiny_mlp(8), epochs=2, head_epochs=3).fit(train, val, trainer=trainer)
    extras = afr.fit_result_.extras
    assert (extras["erm_examples"], extras["heldout_examples"]) == (205, 51)
    assert len(trainer.stages["erm"].sampler) == 205
    assert torch.equal(trainer.initial["afr"]["weight"], trainer.final["erm"]["head.weight"])
    stage = trainer.stages["afr"]
    assert stage.batch_size == 51 and trainer.epochs_run["afr"] == 3  # full batch, one step per epoch
    assert (stage.optim.optimizer, stage.optim.momentum, stage.optim.weight_decay, stage.optim.grad_clip) == (
        "sgd",
        0.0,
        0.0,
        1.0,
    )
    assert 1.0 <= extras["weight_ess"] <= 51 and 0.0 <= extras["conflicting_weight_share"] <= 1.0
    assert torch.equal(afr.model_.head.weight, trainer.final["afr"]["weight"])


def test_afr_needs_no_attribute_labels(toy) -> None:
    train, val = toy_splits(128, 64, 0.1, n_features=6, attrs=False)
    fitted = get_method("afr")(**tiny_mlp(8), epochs=1, head_epochs=2, selection="val_worst_class").fit(train, val)
    assert fitted.fit_result_.selected["stage"] == "afr"


def test_presets_follow_subpopbench_and_the_afr_code() -> None:
    crt = get_method("crt")()
    assert crt.hparams.head_epochs is None and "train.py" in crt.hparam_sources["head_epochs"]
    afr = get_method("afr")()
    hp = afr.hparams
    assert (hp.heldout_fraction, hp.gamma, hp.reg_coeff, hp.head_epochs, hp.head_lr, hp.head_grad_clip) == (
        0.2,
        10.0,
        0.0,
        500,
        0.01,
        1.0,
    )
    assert "README.md" in afr.hparam_sources["gamma"] and hp.balance_classes
    celeba = get_method("afr")(dataset="celeba").hparams
    assert (celeba.gamma, celeba.reg_coeff, celeba.head_epochs, celeba.head_lr) == (1.44, 0.001, 1000, 0.02)
    wb = get_method("afr")(dataset="waterbirds").hparams
    assert (wb.epochs, wb.batch_size, wb.lr, wb.weight_decay) == (50, 32, 3e-3, 1e-4)
    assert {"gamma", "reg_coeff"} <= set(get_method("afr").search_space)
    with pytest.raises(ConfigError, match="heldout_fraction"):
        get_method("afr")(heldout_fraction=1.0)
