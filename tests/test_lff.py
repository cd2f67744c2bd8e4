"""LfF: GCE value and gradient, per-example loss EMA, class-wise normalisation, weights, resume, end-to-end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from debiaslab.data.core import GroupDataset
from debiaslab.engine.checkpoint import load_checkpoint, save_checkpoint
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.methods.lff import LfF, LossEMA, generalized_cross_entropy, relative_difficulty
from toys import assert_same_run, full_and_resumed, interrupt, resume, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits()


def lff(**kw) -> LfF:
    base = {**tiny_mlp(), "epochs": 4}
    return LfF(**{**base, **kw})


# ---------------------------------------------------------------------------------------------- the pieces
def test_gce_value_and_gradient_match_the_closed_form() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3], [-2.0, 3.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 2, 0])
    q = 0.7
    p = torch.softmax(logits.detach(), dim=1)
    p_y = p[torch.arange(3), y]
    loss = generalized_cross_entropy(logits, y, q)
    assert torch.allclose(loss.detach(), (1 - p_y**q) / q, atol=1e-6)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    d_ce = p - F.one_hot(y, 3).float()  # dCE/dz = softmax - onehot
    assert torch.allclose(grad, p_y.unsqueeze(1) ** q * d_ce, atol=1e-6)
    with pytest.raises(ConfigError):
        generalized_cross_entropy(logits, y, 0.0)


def test_loss_ema_first_visit_then_moving_average() -> None:
    ema = LossEMA(torch.tensor([0, 0, 1, 1]), n_classes=2, alpha=0.5)
    ema.update(torch.tensor([0, 2]), torch.tensor([2.0, 4.0]))
    assert ema.ema.tolist() == [2.0, 0.0, 4.0, 0.0] and ema.seen.tolist() == [True, False, True, False]
    ema.update(torch.tensor([1, 0]), torch.tensor([1.0, 4.0]))
    assert ema.ema.tolist() == [3.0, 1.0, 4.0, 0.0]  # index 0: 0.5*2 + 0.5*4; index 1: first visit
    ema.update(torch.tensor([0]), torch.tensor([0.0]))
    assert ema.ema[0].item() == pytest.approx(1.5)


def test_loss_ema_normalises_by_the_class_max_over_the_whole_buffer() -> None:
    ema = LossEMA(torch.tensor([0, 0, 1, 1, 1]), n_classes=3, alpha=0.7)
    ema.update(torch.arange(5), torch.tensor([1.0, 4.0, 2.0, 8.0, 0.5]))
    assert ema.class_max().tolist() == [4.0, 8.0, 0.0]
    # the maximum is taken over every example of the class, not only the batch's
    assert ema.normalized(torch.tensor([0, 2])).tolist() == [0.25, 0.25]
    assert ema.normalized(torch.tensor([4, 1])).tolist() == [0.0625, 1.0]
    state = ema.state_dict()
    assert set(state) == {"ema", "seen"}  # labels come from the dataset, not the checkpoint


def test_relative_difficulty_is_in_unit_interval_and_detached() -> None:
    lb = torch.tensor([0.0, 1.0, 0.5, 1.0], requires_grad=True)
    ld = torch.tensor([0.0, 0.0, 0.5, 1.0], requires_grad=True)
    w = relative_difficulty(lb, ld)
    assert not w.requires_grad
    assert bool(((w >= 0) & (w <= 1)).all())
    assert w.tolist() == pytest.approx([0.0, 1.0, 0.5, 0.5], abs=1e-7)


# ---------------------------------------------------------------------------------------------- fitting
def test_lff_fits_deploys_the_debiased_model_and_weights_conflicting_examples(toy) -> None:
    train, val = toy
    assert get_method("lff") is LfF and not LfF.requires.train_attrs and not LfF.requires.val_attrs
    method = lff().fit(train, val, trainer=Trainer(progress=False))
    result = method.fit_result_
    assert len(result.history) == 4 and result.selection == "val_worst_group"
    last = result.history[-1]
    assert {"train_loss", "train_gce_biased", "train_wce_debiased", "train_w", "val", "val_biased"} <= set(last)
    assert 0.0 <= last["train_w"] <= 1.0
    # f_B fails on bias-conflicting examples, so they get much larger weights
    assert last["train_w_conflicting"] > last["train_w_aligned"] + 0.2
    assert result.extras["final_train_w_conflicting"] == last["train_w_conflicting"]
    # the deployed model is f_D: its report equals the selected epoch's validation line
    selected = result.history[result.selected["epoch"] - 1]
    assert method.evaluate(val).metrics["worst_group"] == pytest.approx(selected["val"]["worst_group"])
    assert selected["val"]["conflicting"] > selected["val_biased"]["conflicting"]
    logits = method.predict_logits(val.x[:5])
    assert logits.shape == (5, 2)


def test_lff_resume_carries_the_loss_averages(toy, tmp_path) -> None:
    train, val = toy

    def averages_saved(cut) -> None:
        saved = torch.load(cut / "checkpoints" / "lff.last.pt", weights_only=True)["modules"]
        assert bool(saved["ema_biased.seen"].all()) and float(saved["ema_debiased.ema"].sum()) > 0

    full, resumed = full_and_resumed(lff, train, val, tmp_path, epoch=2, seed=9, between=averages_saved)
    assert_same_run(full, resumed)


def test_resume_without_the_averages_would_differ(toy, tmp_path) -> None:
    """Guards the test above: dropping the EMA state at the interruption changes the run."""
    train, val = toy
    full = lff().fit(train, val, trainer=Trainer(progress=False, seed=9))
    interrupt(lff(), train, val, tmp_path, epoch=2, seed=9)
    path = tmp_path / "checkpoints" / "lff.last.pt"
    state = load_checkpoint(path)
    for key in ("ema_biased", "ema_debiased"):
        state["modules"][f"{key}.ema"].zero_()
        state["modules"][f"{key}.seen"].zero_()
    save_checkpoint(path, state)  # rewritten with a valid checksum: changed on purpose, not damaged
    resumed = resume(lff(), train, val, tmp_path, seed=9)
    assert resumed.fit_result_.history[-1]["train_loss"] != full.fit_result_.history[-1]["train_loss"]


def test_hparam_table_and_validation() -> None:
    m = LfF(dataset="colored_mnist")
    assert (m.hparams.q, m.hparams.ema_alpha, m.hparams.lr, m.hparams.batch_size) == (0.7, 0.7, 1e-3, 256)
    assert m.hparam_sources["q"].startswith("LfF paper") and m.hparam_sources["epochs"].startswith("LfF paper")
    for bad in ({"q": 0.0}, {"q": 1.5}, {"ema_alpha": 1.0}):
        with pytest.raises(ConfigError):
            LfF(**bad)
