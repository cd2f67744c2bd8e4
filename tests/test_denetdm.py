"""DeNetDM: shared head of the product of experts, expert read-outs and selection on the shallow expert, frozen
deep branch and teacher through stage 2, head initialisation, distillation loss, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from debiaslab.engine.checkpoint import clone_state
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.methods.denetdm import DeNetDM, ProductOfExperts
from debiaslab.methods.teachers import soft_cross_entropy
from debiaslab.models import build_model
from toys import RecordingTrainer, assert_same_run, full_and_resumed, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {
    "model": "mlp",
    "model_kwargs": {"width": 8, "depth": 2},
    "deep_kwargs": {"width": 8, "depth": 3},
    "shallow_kwargs": {"width": 8, "depth": 1},
    "batch_size": 64,
    "lr": 1e-2,
    "expert_epochs": 3,
    "epochs": 2,
    "selection": "val_unbiased",
}


@pytest.fixture(scope="module")
def toy():
    return toy_splits()


def denetdm(**kw) -> DeNetDM:
    return DeNetDM(**{**SMALL, **kw})


def test_registered_label_free_and_cmnist_preset() -> None:
    assert get_method("denetdm") is DeNetDM
    assert not DeNetDM.requires.train_attrs and not DeNetDM.requires.val_attrs
    hp = DeNetDM(dataset="colored_mnist").hparams
    assert (hp.deep_kwargs, hp.shallow_kwargs, hp.model_kwargs) == ({"depth": 4}, {"depth": 2}, {"depth": 4})
    assert (hp.batch_size, hp.expert_weight_decay, hp.weight_decay, hp.temperature) == (64, 1e-3, 0.0, 2.0)


def test_product_of_experts_shares_one_head() -> None:
    deep = build_model("mlp", (8,), 2, width=8, depth=3)
    shallow = build_model("mlp", (8,), 2, width=8, depth=1)
    poe = ProductOfExperts(deep, shallow, 2)
    assert poe.deep.head is poe.head and poe.shallow.head is poe.head
    x = torch.randn(5, 8)
    expected = poe.head(deep.features(x) + shallow.features(x))
    assert torch.allclose(poe(x), expected)
    assert torch.allclose(poe.shallow(x), poe.head(shallow.features(x)))
    n_params = sum(p.numel() for p in poe.parameters())
    assert n_params == sum(p.numel() for n, p in poe.named_parameters())  # the head is counted once


def test_width_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="feature width 8 but the shallow branch 4"):
        ProductOfExperts(build_model("mlp", (8,), 2, width=8), build_model("mlp", (8,), 2, width=4), 2)


def test_soft_cross_entropy_is_kl_plus_teacher_entropy() -> None:
    s, t, tau = torch.randn(6, 3), torch.randn(6, 3), 2.0
    p = F.softmax(t / tau, dim=1)
    kl = F.kl_div(F.log_softmax(s / tau, dim=1), p, reduction="batchmean")
    entropy = -(p * p.log()).sum(dim=1).mean()
    assert math.isclose(float(soft_cross_entropy(s, t, tau)), float(kl + entropy), rel_tol=1e-5)


def test_stage1_selects_on_the_shallow_read_out_and_logs_both_experts(toy) -> None:
    train, val = toy
    method = denetdm().fit(train, val, trainer=RecordingTrainer())
    experts = method.fit_result_.stages[0]
    assert experts.name == "experts" and len(experts.history) == 3
    shallow_scores = [line["val_shallow"]["unbiased"] for line in experts.history]
    assert all("val_deep" in line for line in experts.history)
    assert experts.selected_epoch == 1 + max(range(3), key=lambda i: (shallow_scores[i], -i))
    assert set(method.readout_models_) == {"deep_expert", "shallow_expert"}


def test_stage2_freezes_deep_branch_and_teacher_and_starts_from_h(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = denetdm().fit(train, val, trainer=trainer)
    initial = trainer.initial["distill"]
    setup = trainer.stages["distill"].modules
    # frozen parts bit-identical through stage 2, the target changed
    for key, value in setup.state_dict().items():
        if key.startswith(("deep.", "teacher.")):
            assert torch.equal(value, initial[key]), key
    assert any(not torch.equal(v, initial[k]) for k, v in setup.state_dict().items() if k.startswith("target."))
    # the target head starts as the experts' shared head h
    poe_head = trainer.stages["experts"].modules.head
    assert torch.equal(initial["target.head.weight"], poe_head.weight.detach().cpu())
    assert torch.equal(initial["teacher.head.weight"], poe_head.weight.detach().cpu())
    assert not any(p.requires_grad for p in setup.deep.parameters())
    assert method.model_ is setup.target


def test_frozen_batchnorm_branch_stays_in_eval_mode_and_keeps_its_statistics(toy) -> None:
    train, val = toy
    bn_branch = {"base": "mlp", "base_kwargs": {"width": 8, "depth": 1}, "dim": 8, "hidden": 8}
    method = denetdm(deep_model="projected", deep_kwargs=bn_branch, expert_epochs=1, epochs=1)
    trainer = RecordingTrainer()
    seen: dict[str, bool] = {}
    original = trainer._train_epoch

    def spy(stage, *args, **kwargs):
        out = original(stage, *args, **kwargs)
        if stage.name == "distill":
            seen.update(target=stage.modules.target.training, deep=stage.modules.deep.training)
        return out

    trainer._train_epoch = spy
    method.fit(train, val, trainer=trainer)
    assert seen == {"target": True, "deep": False}
    setup, initial = trainer.stages["distill"].modules, trainer.initial["distill"]
    running = "deep.projector.1.running_mean"
    assert running in initial and torch.equal(setup.state_dict()[running], initial[running])


def test_distill_weight_zero_trains_on_the_poe_loss_only(toy) -> None:
    train, val = toy
    off = denetdm(distill_weight=0.0).fit(train, val, trainer=RecordingTrainer()).fit_result_.stages[1].history
    on = denetdm().fit(train, val, trainer=RecordingTrainer()).fit_result_.stages[1].history
    assert all("train_poe_ce" in line and "train_distill" not in line for line in off)
    assert all("train_distill" in line for line in on)
    assert off[0]["train_loss"] == pytest.approx(off[0]["train_poe_ce"])


def test_resume_mid_distillation_gives_the_same_run(toy, tmp_path) -> None:
    train, val = toy
    full, resumed = full_and_resumed(denetdm, train, val, tmp_path, epoch=1, seed=3, stage="distill")
    assert_same_run(full, resumed)
    assert torch.equal(clone_state(full.experts_)["head.weight"], clone_state(resumed.experts_)["head.weight"])
