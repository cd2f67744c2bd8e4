"""mistake_reweight: its own registered method (not ULE), Ω fixed to the teacher's CE on the student's mistakes,
its pinned defaults, and ULE refusing that Ω with a pointer to it."""

from __future__ import annotations

import pytest
import torch

from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.methods.mistake_reweight import MistakeReweight
from debiaslab.methods.ule import ULE
from toys import RecordingTrainer, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered_under_its_own_name_and_deploys_the_teacher() -> None:
    assert get_method("mistake_reweight") is MistakeReweight and MistakeReweight is not ULE
    assert not MistakeReweight.requires.train_attrs and not MistakeReweight.requires.val_attrs
    train, val = toy_splits(256, 128)
    trainer = RecordingTrainer()
    method = MistakeReweight(**tiny_mlp(), epochs=2).fit(train, val, trainer=trainer)
    stage = trainer.stages["mistake_reweight"]
    assert method.model_ is stage.modules["teacher"] and method.student_ is stage.modules["student"]
    assert method.fit_result_.extras["omega"] == "reweight"
    assert method.predict_logits(val.x[:3]).shape == (3, 2)


def test_defaults_are_pinned_with_their_sources() -> None:
    m = MistakeReweight(dataset="colored_mnist")
    hp = m.hparams
    assert (hp.omega, hp.omega_weight, hp.weighting, hp.student_weight_decay, hp.weight_decay) == (
        "reweight",
        5.0,
        "student_wrong",
        0.01,
        0.0,
    )
    assert "ule-swd" in m.hparam_sources["student_weight_decay"]
    assert "ule-tune" in m.hparam_sources["omega_weight"]
    assert MistakeReweight().hparams.student_weight_decay is None  # elsewhere the student shares the teacher's


@pytest.mark.parametrize("omega", ["mask", "perturb", "align"])
def test_gradient_readings_belong_to_ule(omega: str) -> None:
    with pytest.raises(ConfigError, match="expected one of reweight"):
        MistakeReweight(omega=omega)


def test_ule_refuses_the_gradient_free_scheme_and_names_the_method_that_has_it() -> None:
    with pytest.raises(ConfigError, match="--method mistake_reweight"):
        ULE(omega="reweight")
    with pytest.raises(ConfigError):
        MistakeReweight(weighting="uniform")  # would only rescale the teacher's CE


def test_same_seed_same_run() -> None:
    train, val = toy_splits(256, 128)
    a = MistakeReweight(**tiny_mlp(), epochs=2).fit(train, val, trainer=Trainer(seed=3, progress=False))
    b = MistakeReweight(**tiny_mlp(), epochs=2).fit(train, val, trainer=Trainer(seed=3, progress=False))
    for p, q in zip(a.model_.parameters(), b.model_.parameters()):
        assert torch.equal(p, q)
