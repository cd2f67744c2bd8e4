"""JTT: identification length, error set (clean and logged), exact upsampling, fresh second model, resume."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from debiaslab.data.core import GroupDataset
from debiaslab.engine.checkpoint import clone_state
from debiaslab.engine.sampling import IndexListSampler, UniformSampler
from debiaslab.engine.stage import StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.methods.jtt import JTT, PredictionLog
from debiaslab.methods.stages import error_set


def make_split(n: int, seed: int, split: str, conflict: float, attrs: bool = True) -> GroupDataset:
    """Two classes; a strong spurious binary attribute agrees with the label except for a ``conflict`` share."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    attr = torch.where(torch.rand(n, generator=g) < conflict, 1 - y, y)
    x = torch.randn(n, 8, generator=g) * 0.5
    x[:, 0] += 2.0 * y - 1.0  # weak core feature
    x[:, 1] += 4.0 * attr - 2.0  # strong spurious feature
    return GroupDataset(x=x, y=y, attr=attr if attrs else None, n_classes=2, n_attrs=2, name="toy", split=split)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded; extra threads only contend on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return make_split(512, 0, "train", 0.05), make_split(256, 1, "val", 0.5)


def jtt(**kw) -> JTT:
    base = {
        "model": "mlp",
        "model_kwargs": {"width": 16, "depth": 1},
        "batch_size": 64,
        "lr": 1e-2,
        "epochs": 2,
        "identify_epochs": 2,
        "lambda_up": 5,
    }
    return JTT(**{**base, **kw})


class RecordingTrainer(Trainer):
    """Keeps every built stage, its initial weights and how many epochs it trained."""

    def __init__(self, **kw) -> None:
        super().__init__(progress=False, **kw)
        self.stages: dict = {}
        self.initial: dict = {}
        self.epochs_run: Counter = Counter()

    def run_stage(self, name, build, train, val=None):
        stage, result = super().run_stage(name, build, train, val)
        self.stages[name] = stage
        return stage, result

    def _train(self, stage, rule, train, val):
        self.initial[stage.name] = clone_state(stage.modules)
        return super()._train(stage, rule, train, val)

    def _train_epoch(self, stage, train, optimizer, flat_params, ctx):
        self.epochs_run[stage.name] += 1
        return super()._train_epoch(stage, train, optimizer, flat_params, ctx)


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
    assert isinstance(sampler, IndexListSampler)
    counts = torch.bincount(sampler.indices, minlength=len(train))
    is_error = torch.zeros(len(train), dtype=torch.bool)
    is_error[errors] = True
    assert bool((counts[is_error] == 8).all()) and bool((counts[~is_error] == 1).all())
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
    train = make_split(512, 0, "train", 0.05, attrs=False)
    val = make_split(256, 1, "val", 0.5, attrs=False)
    method = jtt(epochs=1, identify_epochs=1).fit(train, val, trainer=Trainer(progress=False))
    result = method.fit_result_
    assert result.selection == "val_worst_class"
    assert "error_set_size" in result.extras and "error_set_precision" not in result.extras


def test_resume_in_upweight_stage_reproduces_the_run(toy, tmp_path) -> None:
    train, val = toy

    class Interrupt(Exception):
        pass

    class DieInUpweight(Trainer):
        def _train_epoch(self, stage, train, optimizer, flat_params, ctx):
            if stage.name == "upweight" and ctx.epoch == 1:
                raise Interrupt
            return super()._train_epoch(stage, train, optimizer, flat_params, ctx)

    kw = {"error_set_source": "logged", "epochs": 3}
    full = jtt(**kw).fit(train, val, trainer=Trainer(progress=False, seed=5, run_dir=tmp_path / "full"))
    with pytest.raises(Interrupt):
        jtt(**kw).fit(train, val, trainer=DieInUpweight(progress=False, seed=5, run_dir=tmp_path / "cut"))
    resumed = jtt(**kw).fit(train, val, trainer=Trainer(progress=False, seed=5, run_dir=tmp_path / "cut", resume=True))
    assert resumed.fit_result_.stages[0].resumed
    assert torch.equal(resumed.error_set_, full.error_set_)
    strip = lambda hist: [{k: v for k, v in h.items() if "time" not in k} for h in hist]  # noqa: E731
    assert repr(strip(resumed.fit_result_.history)) == repr(strip(full.fit_result_.history))
    for a, b in zip(full.model_.state_dict().values(), resumed.model_.state_dict().values()):
        assert torch.equal(a, b)


def test_hparam_table_and_validation() -> None:
    wb = JTT(dataset="waterbirds")
    assert (wb.hparams.identify_epochs, wb.hparams.lambda_up) == (60, 100)
    assert wb.hparam_sources["lambda_up"].startswith("JTT paper")
    ca = JTT(dataset="celeba")
    assert (ca.hparams.identify_epochs, ca.hparams.lambda_up) == (1, 50)
    cm = JTT(dataset="colored_mnist")
    assert cm.hparam_sources["identify_epochs"].startswith("ours: untuned")
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
