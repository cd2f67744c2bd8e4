"""JTT: identification length, error set (clean and logged), exact upsampling, fresh second model, resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from debiaslab.data.core import GroupDataset
from debiaslab.engine.sampling import UniformSampler
from debiaslab.engine.stage import StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.methods.jtt import JTT, PredictionLog
from debiaslab.methods.stages import error_set
from toys import RecordingTrainer, assert_same_run, assert_upsampled, full_and_resumed, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits()


def jtt(**kw) -> JTT:
    base = {**tiny_mlp(), "epochs": 2, "identify_epochs": 2, "lambda_up": 5}
    return JTT(**{**base, **kw})


def test_registered_and_needs_no_attribute_labels() -> None:
    assert get_method("jtt") is JTT
    assert not JTT.requires.train_attrs and not JTT.requires.val_attrs


def test_identification_runs_exactly_T_epochs_and_upsamples_errors_exactly(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = jtt(identify_epochs=3, epochs=2, lambda_up=7).fit(train, val, trainer=trainer)
    result = method.fit_result_
    assert trainer.epochs_run == {"identify": 3, "upweight": 2}
    assert [s.name for s in result.stages] == ["identify", "upweight"]
    assert len(result.stages[0].history) == 3 and result.stages[0].selected_epoch == 3
    assert result.stages[0].selection == "last"
    errors = method.error_set_
    assert 0 < errors.numel() < len(train)
    sampler = trainer.stages["upweight"].sampler
    assert_upsampled(sampler, len(train), errors, times=8)
    assert sampler.indices.numel() == len(train) + 7 * errors.numel()
    extras = result.extras
    assert extras["error_set_size"] == errors.numel()
    assert (extras["identify_epochs"], extras["lambda_up"]) == (3, 7)
    assert 0.0 <= extras["error_set_precision"] <= 1.0 and 0.0 <= extras["error_set_recall"] <= 1.0
    assert method.model_ is trainer.stages["upweight"].modules
    assert result.selection == "val_worst_group"  # auto with validation attributes


def test_second_stage_model_is_freshly_initialised(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = jtt().fit(train, val, trainer=trainer)
    identify_model = trainer.stages["identify"].modules
    assert method.model_ is not identify_model
    final_identify = identify_model.state_dict()
    init_upweight = trainer.initial["upweight"]
    assert final_identify.keys() == init_upweight.keys()
    assert all(not torch.equal(final_identify[k], init_upweight[k]) for k in init_upweight)
    assert any(not torch.equal(trainer.initial["identify"][k], init_upweight[k]) for k in init_upweight)


def test_error_set_is_what_the_identification_model_gets_wrong(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = jtt().fit(train, val, trainer=trainer)
    model = trainer.stages["identify"].modules
    assert torch.equal(method.error_set_, error_set(trainer, model, train, model))
    # the error set is enriched in bias-conflicting examples (5 % of the data), and upweighting them helps
    assert method.fit_result_.extras["error_set_precision"] > 0.5
    identify, upweight = method.fit_result_.stages
    assert upweight.score > identify.history[-1]["val"]["worst_group"] + 0.1


def test_prediction_log_records_by_dataset_index() -> None:
    record = PredictionLog(5)
    record.record(torch.tensor([3, 0]), torch.tensor([1, 2]))
    record.record(torch.tensor([4]), torch.tensor([0]))
    assert record.pred.tolist() == [2, -1, -1, 1, 0]
    record.reset()
    assert record.pred.tolist() == [-1] * 5


def test_logged_error_set_matches_clean_pass_when_weights_do_not_move(toy) -> None:
    """With a negligible learning rate the training-step logits of epoch T are the clean logits; batches are
    shuffled, so this only holds when predictions are stored by ``batch.index``."""
    train, val = toy
    frozen = {"optimizer": "sgd", "momentum": 0.0, "identify_lr": 1e-30, "epochs": 1}
    clean = jtt(**frozen, error_set_source="clean").fit(train, val, trainer=Trainer(progress=False, seed=3))
    trainer = RecordingTrainer(seed=3)
    logged = jtt(**frozen, error_set_source="logged").fit(train, val, trainer=trainer)
    assert 0 < clean.error_set_.numel() < len(train)
    assert torch.equal(logged.error_set_, clean.error_set_)
    record = trainer.stages["identify"].modules["log"]
    assert bool((record.pred >= 0).all())  # every example logged in epoch T
    # while the model learns, the training-time log (early steps of epoch T) differs from the end-of-T clean pass
    trainer = RecordingTrainer()
    learning = jtt(error_set_source="logged", identify_epochs=1).fit(train, val, trainer=trainer)
    model = trainer.stages["identify"].modules["model"]
    assert not torch.equal(learning.error_set_, error_set(trainer, model, train, model))


def test_loss_weight_mode_weights_errors_by_lambda_plus_one(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = jtt(upweight_mode="loss_weight", lambda_up=9).fit(train, val, trainer=trainer)
    stage = trainer.stages["upweight"]
    assert isinstance(stage.sampler, UniformSampler) and len(stage.sampler) == len(train)
    batch = train.batch(torch.arange(len(train)))
    weights = torch.ones(len(train))
    weights[method.error_set_] = 10.0
    with torch.no_grad():
        expected = (F.cross_entropy(stage.modules(batch.x), batch.y, reduction="none") * weights).mean()
        got = stage.loss_fn(batch, StepContext("upweight", 0, 0, 1, 1))
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_no_attribute_labels_needed_at_all() -> None:
    train, val = toy_splits(attrs=False)
    method = jtt(epochs=1, identify_epochs=1).fit(train, val, trainer=Trainer(progress=False))
    result = method.fit_result_
    assert result.selection == "val_worst_class"
    assert "error_set_size" in result.extras and "error_set_precision" not in result.extras


def test_resume_in_upweight_stage_reproduces_the_run(toy, tmp_path) -> None:
    train, val = toy
    kw = {"error_set_source": "logged", "epochs": 3}
    full, resumed = full_and_resumed(lambda: jtt(**kw), train, val, tmp_path, epoch=1, seed=5, stage="upweight")
    assert resumed.fit_result_.stages[0].resumed
    assert torch.equal(resumed.error_set_, full.error_set_)
    assert_same_run(full, resumed)


def test_hparam_table_and_validation() -> None:
    wb = JTT(dataset="waterbirds")
    assert (wb.hparams.identify_epochs, wb.hparams.lambda_up) == (60, 100)
    assert wb.hparam_sources["lambda_up"].startswith("JTT paper")
    ca = JTT(dataset="celeba")
    assert (ca.hparams.identify_epochs, ca.hparams.lambda_up) == (1, 50)
    cm = JTT(dataset="colored_mnist")
    assert (cm.hparams.lambda_up, cm.hparams.weight_decay, cm.hparams.identify_weight_decay) == (200, 0.01, 0.0)
    assert cm.hparams.epochs == 30 and "jtt-wd" in cm.hparam_sources["lambda_up"]
    assert cm.hparams.identify_lr == 3e-4 and "jtt-tune" in cm.hparam_sources["identify_lr"]
    assert cm.hparam_sources["lr"].startswith("LfF paper")
    assert JTT(identify_epochs="3").hparams.identify_epochs == 3  # CLI strings are coerced
    for bad in (
        {"identify_epochs": 0},
        {"lambda_up": -1},
        {"lambda_up": 1.5},
        {"error_set_source": "x"},
        {"upweight_mode": "x"},
    ):
        with pytest.raises(ConfigError):
            JTT(**bad)
