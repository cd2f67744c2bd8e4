"""ULE (reconstruction): the student is untouched by the teacher's loss, g is a constant, each Ω is what it says
(align by hand on linear models, perturb by ε, mask exactly k), weightings, two-group optimiser, fit, resume."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from debiaslab.data.core import GroupDataset
from debiaslab.engine.optim import OptimConfig, build_optimizer
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.methods.lff import generalized_cross_entropy
from debiaslab.methods.mistake_reweight import MistakeReweightHparams
from debiaslab.methods.ule import (
    ULE,
    MistakeMemory,
    ULEHparams,
    example_weights,
    logits_and_input_grad,
    mask_count,
    mask_top_saliency,
    perturb_along_gradient,
    squared_cosine,
    ule_loss_terms,
)
from debiaslab.models import build_model
from toys import RecordingTrainer, assert_same_run, assert_same_weights, full_and_resumed, tiny_mlp, toy_splits

OMEGAS = ("align", "perturb", "mask")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits(384, 128)


def ule(**kw) -> ULE:
    base = {**tiny_mlp(), "epochs": 2}
    return ULE(**{**base, **kw})


def pair(depth: int = 1, in_dim: int = 8, k: int = 2, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    return build_model("mlp", (in_dim,), k, width=16, depth=depth), build_model(
        "mlp", (in_dim,), k, width=16, depth=depth
    )


def batch(n: int = 32, in_dim: int = 8, k: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, in_dim, generator=g), torch.randint(0, k, (n,), generator=g)


# ---------------------------------------------------------------------------------------------- isolation
@pytest.mark.parametrize("omega", OMEGAS)
@pytest.mark.parametrize("weighting", ["uniform", "student_loss"])
def test_teacher_terms_have_no_path_to_the_student(omega: str, weighting: str) -> None:
    student, teacher = pair()
    x, y = batch()
    terms = ule_loss_terms(student, teacher, x, y, ULEHparams(omega=omega, weighting=weighting, mask_fraction=0.25))
    s_params, t_params = list(student.parameters()), list(teacher.parameters())
    for key in ("teacher", "omega", "ce_teacher"):
        grads = torch.autograd.grad(terms[key], s_params, allow_unused=True, retain_graph=True)
        assert all(g is None or not bool(g.any()) for g in grads), key
    # the student's CE reaches only the student, and Ω does reach the teacher
    assert all(g is None for g in torch.autograd.grad(terms["student"], t_params, allow_unused=True, retain_graph=True))
    omega_grads = torch.autograd.grad(terms["omega"], t_params, allow_unused=True, retain_graph=True)
    assert any(g is not None and bool(g.any()) for g in omega_grads)
    assert torch.allclose(terms["loss"], terms["student"] + terms["teacher"])


def test_gce_student_trains_on_generalised_ce_and_stays_isolated() -> None:
    """``student_loss="gce"`` changes only the student's own term: it equals GCE on the student's logits, still has
    no path to the teacher, and the teacher's terms are the same as with a CE student."""
    student, teacher = pair()
    x, y = batch()
    hp = ULEHparams(omega="mask", weighting="student_wrong", student_loss="gce", student_gce_q=0.7)
    terms = ule_loss_terms(student, teacher, x, y, hp)
    assert torch.allclose(terms["student"], generalized_cross_entropy(student(x), y, 0.7).mean())
    t_params = list(teacher.parameters())
    assert all(g is None for g in torch.autograd.grad(terms["student"], t_params, allow_unused=True, retain_graph=True))
    ce_terms = ule_loss_terms(student, teacher, x, y, ULEHparams(omega="mask", weighting="student_wrong"))
    assert torch.equal(terms["teacher"], ce_terms["teacher"])
    assert hp.omega_settings()["student_loss"] == "gce" and hp.omega_settings()["student_gce_q"] == 0.7


def test_student_input_gradient_is_a_constant_and_writes_no_parameter_grads() -> None:
    student, _ = pair()
    x, y = batch()
    logits, g = logits_and_input_grad(student, x, y, "true_logit", create_graph=False)
    assert not g.requires_grad and g.grad_fn is None and g.shape == x.shape
    assert logits.requires_grad  # the CE can still be built on the same forward
    assert all(p.grad is None for p in student.parameters())
    _, h = logits_and_input_grad(student, x, y, "true_logit", create_graph=True)
    assert h.requires_grad and torch.allclose(h, g)


@pytest.mark.parametrize("omega", OMEGAS)
def test_student_weights_are_bit_identical_whatever_the_teacher_weight(toy, omega: str) -> None:
    """After real optimiser steps the student only depends on its own CE: λ = 0 and λ = 1e4 give the same
    student to the bit, while the teachers differ."""
    train, val = toy
    kw = {"omega": omega, "weighting": "student_loss", "epochs": 1}
    runs = [ule(omega_weight=lam, **kw).fit(train, val, trainer=Trainer(progress=False, seed=3)) for lam in (0, 1e4)]
    s0, s1 = (run.student_.state_dict() for run in runs)
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    t0, t1 = (run.model_.state_dict() for run in runs)
    assert any(not torch.equal(t0[k], t1[k]) for k in t0)


# ---------------------------------------------------------------------------------------------- the Ω variants
def test_align_matches_hand_computation_on_linear_models_and_double_backprop_reaches_the_teacher() -> None:
    student, teacher = pair(depth=0, in_dim=4, k=3)
    x, y = batch(n=16, in_dim=4, k=3)
    terms = ule_loss_terms(student, teacher, x, y, ULEHparams(omega="align", weighting="uniform"))
    # linear models: the input gradient of logit y is the weight row W[y]
    w_s, w_t = student.head.weight.detach(), teacher.head.weight
    g, h = w_s[y], w_t[y]
    hand = ((h * g).sum(1) ** 2 / (h.pow(2).sum(1) * g.pow(2).sum(1))).mean()
    assert float(terms["omega"].detach()) == pytest.approx(float(hand.detach()), rel=1e-5)
    (got,) = torch.autograd.grad(terms["omega"], w_t, retain_graph=True)
    (want,) = torch.autograd.grad(hand, w_t)
    assert torch.allclose(got, want, atol=1e-6) and bool(got.any())
    # through a ReLU layer the Ω gradient (second order) reaches the first layer too
    student, teacher = pair(depth=1)
    x, y = batch()
    omega = ule_loss_terms(student, teacher, x, y, ULEHparams(omega="align", weighting="uniform"))["omega"]
    first = teacher.body[0].weight
    (grad,) = torch.autograd.grad(omega, first)
    assert bool(grad.any())


def test_squared_cosine_by_hand() -> None:
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    g = torch.tensor([[0.0, 2.0], [3.0, 3.0], [1.0, 1.0]])
    assert squared_cosine(h, g).tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)


def test_perturb_moves_inputs_by_exactly_eps_against_the_gradient() -> None:
    g = torch.randn(5, 3, 4, 4)
    g[2] = 0.0
    x = torch.rand(5, 3, 4, 4)
    moved = perturb_along_gradient(x, g, eps=0.7)
    step = (moved - x).flatten(1)
    assert step.norm(dim=1)[[0, 1, 3, 4]].tolist() == pytest.approx([0.7] * 4, rel=1e-5)
    assert torch.equal(moved[2], x[2])  # no gradient, no move
    cos = F.cosine_similarity(step[[0, 1, 3, 4]], -g.flatten(1)[[0, 1, 3, 4]], dim=1)
    assert cos.tolist() == pytest.approx([1.0] * 4, abs=1e-5)
    # inside the loss: the teacher is scored on exactly these inputs
    student, teacher = pair()
    xb, yb = batch()
    hp = ULEHparams(omega="perturb", weighting="uniform", perturb_eps=0.7)
    _, gb = logits_and_input_grad(student, xb, yb, "true_logit", create_graph=False)
    want = F.cross_entropy(teacher(perturb_along_gradient(xb, gb, 0.7)), yb)
    assert float(ule_loss_terms(student, teacher, xb, yb, hp)["omega"].detach()) == pytest.approx(
        float(want.detach()), rel=1e-5
    )


def test_mask_zeroes_exactly_the_k_largest_gradient_entries() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, 5, generator=gen) + 0.5  # no zeros before masking
    g = torch.randn(4, 3, 5, 5, generator=gen)
    k = mask_count(75, 0.2)
    assert k == 15
    out = mask_top_saliency(x, g, 0.2, "entry")
    zeroed = (out == 0).flatten(1)
    assert zeroed.sum(1).tolist() == [k] * 4
    top = g.abs().flatten(1).topk(k, dim=1).indices
    assert all(set(torch.nonzero(zeroed[i]).flatten().tolist()) == set(top[i].tolist()) for i in range(4))
    kept = ~zeroed
    assert torch.equal(out.flatten(1)[kept], x.flatten(1)[kept])
    # whole pixels: |g| summed over channels, the top 5 of 25 pixels zeroed in every channel
    out = mask_top_saliency(x, g, 0.2, "pixel")
    pixel_zero = (out == 0).all(dim=1).flatten(1)
    assert pixel_zero.sum(1).tolist() == [5] * 4 and int((out == 0).sum()) == 4 * 5 * 3
    top = g.abs().sum(1).flatten(1).topk(5, dim=1).indices
    assert all(set(torch.nonzero(pixel_zero[i]).flatten().tolist()) == set(top[i].tolist()) for i in range(4))
    assert mask_count(10, 0.01) == 1 and mask_count(10, 0.99) == 10


def test_weightings_follow_their_normalisation() -> None:
    logits = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0, 0, 1])  # the student is wrong on example 1 only
    assert example_weights("uniform", logits, y).tolist() == [1.0] * 4
    wrong = example_weights("student_wrong", logits, y)
    assert wrong.tolist() == [0.0, 4.0, 0.0, 0.0] and not wrong.requires_grad
    assert example_weights("student_wrong", logits, torch.tensor([0, 1, 0, 1])).tolist() == [0.0] * 4
    ce = F.cross_entropy(logits.detach(), y, reduction="none")
    loss_w = example_weights("student_loss", logits, y)
    assert torch.allclose(loss_w, ce / ce.mean()) and float(loss_w.mean()) == pytest.approx(1.0)
    p_y = torch.softmax(logits.detach(), 1)[torch.arange(4), y]
    conf = example_weights("student_confidence", logits, y)
    assert torch.allclose(conf, p_y / p_y.mean()) and not conf.requires_grad
    with pytest.raises(ConfigError):
        example_weights("nope", logits, y)


def test_reweight_is_the_teachers_ce_weighted_by_the_students_mistakes() -> None:
    """``reweight`` (``mistake_reweight``'s Ω): mean_i w_i · CE(T(x_i), y_i) on the unchanged inputs; with
    ``student_wrong`` only the examples S gets wrong count, each 1/(share wrong) times."""
    student, teacher = pair()
    x, y = batch()
    terms = ule_loss_terms(student, teacher, x, y, MistakeReweightHparams())
    with torch.no_grad():
        wrong = (student(x).argmax(1) != y).float()
        ce = F.cross_entropy(teacher(x), y, reduction="none")
    assert 0 < wrong.sum() < 32
    assert float(terms["omega"].detach()) == pytest.approx(float((wrong * ce).sum() / wrong.sum()), rel=1e-5)
    assert float(terms["ce_teacher"].detach()) == pytest.approx(float(ce.mean()), rel=1e-5)


def test_mistake_memory_running_mean_and_ema_by_hand() -> None:
    rate, ema = MistakeMemory(4), MistakeMemory(4, alpha=0.5)
    for wrong in ([1.0, 0.0], [0.0, 0.0], [1.0, 1.0]):  # examples 2 and 0 visited three times, 1 and 3 never
        for memory in (rate, ema):
            memory.update(torch.tensor([2, 0]), torch.tensor(wrong))
    assert torch.allclose(rate.value, torch.tensor([1 / 3, 0.0, 2 / 3, 0.0]))
    # EMA: first visit sets the value, then v <- 0.5 v + 0.5 x: example 2: 1 -> 0.5 -> 0.75; example 0: 0 -> 0 -> 0.5
    assert torch.allclose(ema.value, torch.tensor([0.5, 0.0, 0.75, 0.0]))
    assert rate.visits.tolist() == [3.0, 0.0, 3.0, 0.0]
    w = rate.weights(torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(w, torch.tensor([4 / 3, 0.0, 8 / 3, 0.0])) and float(w.mean()) == pytest.approx(1.0)
    assert rate.weights(torch.tensor([1, 3])).tolist() == [0.0, 0.0]  # nothing recorded: all zero, not NaN
    assert {"value", "visits"} <= set(rate.state_dict())  # buffers: stage checkpoints carry the record
    with pytest.raises(ConfigError, match="alpha"):
        MistakeMemory(3, alpha=1.0)


@pytest.mark.parametrize("weighting", ["student_wrong_rate", "student_wrong_ema"])
def test_memory_weightings_record_the_batch_then_weight_by_the_record(weighting: str) -> None:
    """The batch's mistakes go into the record at its dataset indices before Ω reads them; the teacher's terms
    still have no path to the student; without a record the weighting is refused."""
    student, teacher = pair()
    x, y = batch()
    hp = ULEHparams(omega="mask", weighting=weighting, memory_alpha=0.5)
    index = torch.arange(100, 132)
    memory = MistakeMemory(200, alpha=0.5 if weighting.endswith("ema") else None)
    memory.value[100:132] = 1.0  # a past in which S got every example of this batch wrong
    memory.visits[100:132] = 1.0
    terms = ule_loss_terms(student, teacher, x, y, hp, index, memory)
    wrong = (student(x).argmax(1) != y).float()
    expected = 0.5 * (1.0 + wrong)  # running mean of two visits and EMA with alpha 0.5 agree here
    assert torch.allclose(memory.value[100:132], expected) and bool((memory.visits[100:132] == 2).all())
    assert int(memory.visits.sum()) == 64  # no other row was touched
    masked = mask_top_saliency(x, logits_and_input_grad(student, x, y, "true_logit", create_graph=False)[1], 0.25)
    with torch.no_grad():
        per_example = F.cross_entropy(teacher(masked), y, reduction="none")
    assert torch.allclose(terms["omega"], (expected / expected.mean() * per_example).mean(), atol=1e-6)
    grads = torch.autograd.grad(terms["teacher"], list(student.parameters()), allow_unused=True)
    assert all(g is None or not bool(g.any()) for g in grads)
    with pytest.raises(ConfigError, match="MistakeMemory"):
        ule_loss_terms(student, teacher, x, y, hp)
    with pytest.raises(ConfigError, match="MistakeMemory"):
        example_weights(weighting, student(x), y)


def test_loss_saliency_removes_evidence_like_the_logit() -> None:
    """``loss`` differentiates log p(y|x), so stepping against g lowers the teacher-independent evidence."""
    student, _ = pair()
    x, y = batch()
    _, g = logits_and_input_grad(student, x, y, "loss", create_graph=False)
    with torch.no_grad():
        before = F.log_softmax(student(x), 1)[torch.arange(32), y]
        after = F.log_softmax(student(perturb_along_gradient(x, g, 1e-3)), 1)[torch.arange(32), y]
    assert bool((after <= before + 1e-7).all())


# ---------------------------------------------------------------------------------------------- optimiser
def test_two_parameter_groups_equal_two_separate_optimisers() -> None:
    student, teacher = pair()
    x, y = batch()
    hp = ULEHparams(omega="align")
    s2, t2 = copy.deepcopy(student), copy.deepcopy(teacher)
    groups = [{"params": list(teacher.parameters())}, {"params": list(student.parameters()), "lr": 3e-2}]
    joint = build_optimizer(groups, OptimConfig(optimizer="adam", lr=1e-2))
    opt_t = build_optimizer(t2.parameters(), OptimConfig(optimizer="adam", lr=1e-2))
    opt_s = build_optimizer(s2.parameters(), OptimConfig(optimizer="adam", lr=3e-2))
    for _ in range(3):
        joint.zero_grad()
        ule_loss_terms(student, teacher, x, y, hp)["loss"].backward()
        joint.step()
        terms = ule_loss_terms(s2, t2, x, y, hp)
        opt_s.zero_grad(), opt_t.zero_grad()
        terms["student"].backward(retain_graph=True)
        terms["teacher"].backward()
        opt_s.step(), opt_t.step()
    for a, b in ((student, s2), (teacher, t2)):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.allclose(p, q, atol=1e-6)


# ---------------------------------------------------------------------------------------------- fitting
def test_registered_deploys_the_teacher_and_records_the_student(toy) -> None:
    train, val = toy
    assert get_method("ule") is ULE and not ULE.requires.train_attrs and not ULE.requires.val_attrs
    trainer = RecordingTrainer()
    method = ule(student_lr=5e-3, student_weight_decay=1e-4).fit(train, val, trainer=trainer)
    stage = trainer.stages["ule"]
    modules = stage.modules
    assert method.model_ is modules["teacher"] and method.student_ is modules["student"]
    assert stage.predict_fn is modules["teacher"] and stage.extra_predictors == {"student": modules["student"]}
    groups = stage.parameters_to_optimize()
    assert [len(g["params"]) for g in groups] == [4, 4]
    assert all(p is q for p, q in zip(groups[0]["params"], modules["teacher"].parameters()))
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (5e-3, 1e-4) and "lr" not in groups[0]
    result = method.fit_result_
    last = result.history[-1]
    assert {"train_loss", "train_ce_student", "train_ce_teacher", "train_omega", "train_teacher"} <= set(last)
    assert {"val", "val_student"} <= set(last)
    selected = result.history[result.selected["epoch"] - 1]
    assert method.evaluate(val).metrics["worst_group"] == pytest.approx(selected["val"]["worst_group"])
    extras = result.extras
    assert (extras["omega"], extras["weighting"], extras["student_lr"]) == (ULEHparams.omega, "student_wrong", 5e-3)
    assert "perturb_eps" not in extras or extras["omega"] == "perturb"  # only the chosen Ω's settings are recorded
    assert extras["student_val_final"] == last["val_student"]
    assert extras["student_val_selected_epoch"] == selected["val_student"]


@pytest.mark.parametrize(
    ("omega", "saliency", "weighting", "image"),
    [
        ("align", "true_logit", "uniform", False),
        ("align", "pred_logit", "student_confidence", False),
        ("perturb", "loss", "student_loss", False),
        ("mask", "pred_logit", "student_wrong", False),
        ("mask", "true_logit", "uniform", True),
        ("mask", "true_logit", "student_wrong_rate", False),
        ("perturb", "true_logit", "student_wrong_ema", False),
    ],
)
def test_every_variant_fits_end_to_end(omega: str, saliency: str, weighting: str, image: bool) -> None:
    train, val = toy_splits(256, 128, shape=(2, 2, 2) if image else None)  # (C, H, W): whole-pixel masking
    unit = "pixel" if image else "entry"
    method = ule(omega=omega, saliency=saliency, weighting=weighting, mask_unit=unit, epochs=2)
    result = method.fit(train, val, trainer=Trainer(progress=False)).fit_result_
    assert len(result.history) == 2 and result.selection == "val_worst_group"
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    assert result.extras["omega"] == omega and result.extras["saliency"] == saliency
    assert ("memory_alpha" in result.extras) == (weighting == "student_wrong_ema")
    if weighting.startswith("student_wrong_"):  # the record's diagnostics: conflicting vs aligned examples
        assert {"train_memory_conflicting", "train_memory_aligned"} <= set(result.history[-1])
    assert method.predict_logits(val.x[:3]).shape == (3, 2)


@pytest.mark.parametrize("variant", [{"omega": "align"}, {"omega": "mask", "weighting": "student_wrong_rate"}])
def test_resume_after_interruption_reproduces_the_run(toy, tmp_path, variant) -> None:
    """Also for the mistake record: it lives in the stage's checkpoint, so a resumed run weights Ω the same."""
    train, val = toy

    def checkpoint_kept(cut) -> None:
        assert (cut / "checkpoints" / "ule.last.pt").exists()

    kw = {**variant, "epochs": 3}
    full, resumed = full_and_resumed(lambda: ule(**kw), train, val, tmp_path, epoch=1, seed=4, between=checkpoint_kept)
    assert_same_run(full, resumed)
    assert_same_weights(full.student_, resumed.student_)


def test_hparam_table_and_validation() -> None:
    """The default reading, chosen on validation (benchmarks/results/ule-search), and the paper's plain-ERM student
    (ULE abstract: the student is trained with no constraints)."""
    m = ULE(dataset="colored_mnist")
    hp = m.hparams
    assert (hp.omega, hp.saliency, hp.weighting, hp.omega_weight, hp.mask_fraction, hp.mask_unit) == (
        "mask",
        "pred_logit",
        "student_wrong",
        1.0,
        0.1,
        "entry",
    )
    assert "chosen on validation" in m.hparam_sources["omega"] and "ule-search" in m.hparam_sources["omega"]
    assert (hp.student_loss, hp.student_weight_decay, hp.student_lr, hp.weight_decay) == ("ce", 0.0, None, 0.0)
    assert m.hparam_sources["student_weight_decay"].startswith("ULE paper")
    assert ULE(dataset="biased_mnist").hparams.student_weight_decay == 0.0  # unconstrained student on every dataset
    assert m.hparam_sources["lr"].startswith("LfF paper") and hp.selection == "val_unbiased"
    assert ULE(omega_weight="30").hparams.omega_weight == 30  # CLI strings are coerced
    for bad in (
        {"omega": "x"},
        {"saliency": "x"},
        {"weighting": "x"},
        {"mask_unit": "x"},
        {"omega_weight": -1.0},
        {"perturb_eps": 0.0},
        {"mask_fraction": 1.0},
        {"mask_fraction": 0.0},
        {"student_lr": 0.0},
        {"student_weight_decay": -1.0},
        {"student_loss": "mse"},
        {"student_gce_q": 0.0},
        {"memory_alpha": 1.0},
        {"omega": "reweight", "weighting": "uniform"},
    ):
        with pytest.raises(ConfigError):
            ULE(**bad)
