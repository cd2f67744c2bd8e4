"""DeTT and plain KD: transplanted frozen teacher head, projector trained, detector weights, frozen teacher, teacher
from a run directory or trained on the spot, parameter counts, resume."""

from __future__ import annotations

import pytest
import torch

from debiaslab.engine.checkpoint import save_model_file
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.methods.dett import DeTT
from debiaslab.methods.erm import ERM
from debiaslab.methods.kd import KnowledgeDistillation
from toys import RecordingTrainer, assert_same_run, full_and_resumed, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    return toy_splits()


@pytest.fixture(scope="module")
def teacher_dir(toy, tmp_path_factory):
    """A finished "teacher" (an MLP of width 16) saved like a run directory's model.pt."""
    train, val = toy
    teacher = ERM(**tiny_mlp(width=16), epochs=3, selection="val_unbiased").fit(train, val)
    path = tmp_path_factory.mktemp("teacher")
    save_model_file(path / "model.pt", teacher.model_, teacher.fit_result_.model_spec)
    return path


def dett(teacher_dir, **kw) -> DeTT:
    base = {**tiny_mlp(width=4), "epochs": 2, "teacher_run": str(teacher_dir), "selection": "val_unbiased"}
    return DeTT(**{**base, **kw})


def test_registered() -> None:
    assert get_method("dett") is DeTT and get_method("kd") is KnowledgeDistillation


def test_head_is_the_teachers_frozen_tensor_and_projector_is_trained(toy, teacher_dir) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = dett(teacher_dir).fit(train, val, trainer=trainer)
    stage = trainer.stages["dett_student"]
    student, teacher = stage.modules.student, stage.modules.teacher
    initial = trainer.initial["dett_student"]
    # transplanted: equal to the teacher's head at the start and never updated
    assert torch.equal(initial["student.head.weight"], teacher.head.weight)
    assert torch.equal(student.head.weight, teacher.head.weight)
    assert torch.equal(student.head.bias, teacher.head.bias)
    assert not student.head.weight.requires_grad
    # the teacher is untouched
    for key, value in stage.modules.teacher.state_dict().items():
        assert torch.equal(value, initial[f"teacher.{key}"]), key
    # the projector is in the optimiser and moved
    optimised = {id(p) for p in stage.parameters_to_optimize()}
    assert all(id(p) in optimised for p in student.projector.parameters())
    assert id(student.head.weight) not in optimised and not any(id(p) in optimised for p in teacher.parameters())
    assert not torch.equal(student.projector.weight, initial["student.projector.weight"])
    # deployed: teacher head ∘ projector ∘ student features, width 4 projected to the teacher's 16
    x = val.x[:5]
    assert torch.allclose(method.predict_logits(x), teacher.head(student.projector(student.base.features(x))))
    assert student.projector.weight.shape == (16, 4)
    extras = method.fit_result_.extras
    assert extras["student_params"] < extras["teacher_params"]
    assert method.fit_result_.model_spec["name"] == "projected"


def test_detector_errors_weigh_lambda_up(toy, teacher_dir) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = dett(teacher_dir, detector_epochs=1, lambda_up=20.0).fit(train, val, trainer=trainer)
    assert trainer.epochs_run["dett_detector"] == 1
    errors = method.error_set_
    assert 0 < errors.numel() < len(train)
    stage = trainer.stages["dett_student"]
    # the loss of an all-error batch is lambda_up times (the mean-normalised) loss of the same batch unweighted
    from debiaslab.engine.stage import StepContext

    ctx = StepContext("dett_student", 0, 0, 1, 1)
    wrong = train.batch(errors[:4])
    right_idx = torch.tensor([i for i in range(len(train)) if i not in set(errors.tolist())][:4])
    right = train.batch(right_idx)
    with torch.no_grad():
        lw = stage.loss_fn(wrong, ctx)
        lr = stage.loss_fn(right, ctx)
    ratio_w = float(lw["loss"]) / float(lw["feature_mse"])
    ratio_r = float(lr["loss"]) / float(lr["feature_mse"])
    assert ratio_w / ratio_r == pytest.approx(20.0, rel=1e-4)


def test_teacher_run_checks_and_errors(toy, teacher_dir, tmp_path) -> None:
    train, val = toy
    with pytest.raises(ConfigError, match=r"no model\.pt found"):
        dett(tmp_path).fit(train, val)
    other_inputs, other_val = toy_splits(n_features=6)
    with pytest.raises(
        ConfigError, match=r"holds a model for inputs \(8,\) with 2 classes, but the training data has inputs \(6,\)"
    ):
        dett(teacher_dir).fit(other_inputs, other_val)
    with pytest.raises(ConfigError, match="both 0"):
        DeTT(feature_weight=0.0, ce_weight=0.0)


def test_teacher_trained_on_the_spot(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = DeTT(
        **tiny_mlp(width=4),
        epochs=1,
        teacher_method="erm",
        teacher_hparams={**tiny_mlp(width=16), "epochs": 1},
    ).fit(train, val, trainer=trainer)
    assert trainer.epochs_run["erm"] == 1 and trainer.epochs_run["dett_student"] == 1
    assert "trained on the spot" in method.fit_result_.extras["teacher"]


def test_kd_student_matches_soft_targets_and_teacher_is_frozen(toy, teacher_dir) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = KnowledgeDistillation(**tiny_mlp(width=4), epochs=2, teacher_run=str(teacher_dir)).fit(
        train, val, trainer=trainer
    )
    stage = trainer.stages["kd_student"]
    for key, value in stage.modules.teacher.state_dict().items():
        assert torch.equal(value, trainer.initial["kd_student"][f"teacher.{key}"]), key
    assert {"train_ce", "train_kd"} <= set(method.fit_result_.stages[0].history[0])
    assert set(method.readout_models_) == {"teacher"}


def test_dett_resume_gives_the_same_run(toy, teacher_dir, tmp_path) -> None:
    train, val = toy
    full, resumed = full_and_resumed(
        lambda: dett(teacher_dir), train, val, tmp_path, epoch=1, seed=1, stage="dett_student"
    )
    assert_same_run(full, resumed)
