"""BAM: auxiliary logits only in stage-1 training, T epochs, exact μ upsampling, continued stage 2, resume,
label-free ClassDiff selection, both selections reported, K = 3."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.checkpoint import clone_state
from debiaslab.engine.optim import OptimConfig, build_optimizer
from debiaslab.engine.stage import StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.evaluation.selection import select_best
from debiaslab.methods import get_method
from debiaslab.methods.bam import BAM, AuxiliaryLogits, amplify_stage, squared_loss
from debiaslab.methods.stages import error_set
from toys import (
    RecordingTrainer,
    assert_same_run,
    assert_same_weights,
    assert_upsampled,
    full_and_resumed,
    tiny_mlp,
    toy_splits,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits(one_hot=True)


def bam(**kw) -> BAM:
    # stage-1 lr 0.025 with the class-summed loss (K = 2) takes the steps lr 0.05 took with the class mean
    base = {**tiny_mlp(lr=0.025), "upweight_lr": 0.05, "epochs": 2, "amplify_epochs": 2, "aux_lambda": 5.0, "mu": 5}
    return BAM(**{**base, **kw})


def test_registered_and_needs_no_attribute_labels() -> None:
    assert get_method("bam") is BAM
    assert not BAM.requires.train_attrs and not BAM.requires.val_attrs
    assert BAM().hparams.optimizer == "sgd"


def test_amplify_runs_exactly_T_epochs_and_upsamples_errors_mu_times(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = bam(amplify_epochs=3, epochs=2, mu=7).fit(train, val, trainer=trainer)
    result = method.fit_result_
    assert trainer.epochs_run == {"amplify": 3, "upweight": 2}
    amplify = result.stages[0]
    assert amplify.name == "amplify" and len(amplify.history) == 3 and amplify.selected_epoch == 3
    assert amplify.selection == "last"
    errors = method.error_set_
    model = trainer.stages["amplify"].modules["model"]
    assert torch.equal(errors, error_set(trainer, model, train, model))  # clean pass of the epoch-T net, no b
    assert 0 < errors.numel() < len(train)
    sampler = trainer.stages["upweight"].sampler
    assert_upsampled(sampler, len(train), errors, times=7)
    extras = result.extras
    assert (extras["amplify_epochs"], extras["official_T"], extras["mu"], extras["aux_lambda"]) == (3, 2, 7, 5.0)
    assert extras["error_set_size"] == errors.numel()
    assert 0.0 <= extras["error_set_precision"] <= 1.0 and 0.0 <= extras["error_set_recall"] <= 1.0
    nk4 = len(train) * 2 * 4
    assert extras["aux_table_bytes"] == nk4 and extras["aux_optimizer_state_bytes"] == nk4  # momentum buffer
    assert extras["aux_total_bytes"] == 3 * nk4  # + the dense gradient
    assert method.model_ is trainer.stages["upweight"].modules


def test_auxiliary_logits_are_absent_at_evaluation(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    bam().fit(train, val, trainer=trainer)
    stage = trainer.stages["amplify"]
    model, aux = stage.modules["model"], stage.modules["aux"]
    assert float(aux.b.detach().abs().max()) > 0  # b was trained
    assert stage.predict_fn is model
    before = trainer.predict(stage.predict_fn, val)
    with torch.no_grad():
        model.eval()
        assert torch.allclose(stage.predict_fn(val.x), model(val.x))
        aux.b.normal_(0.0, 100.0)
    after = trainer.predict(stage.predict_fn, val)
    assert torch.equal(before, after)
    # but b does change the training loss
    batch = train.batch(torch.arange(64))
    ctx = StepContext("amplify", 0, 0, 1, 1)
    with torch.no_grad():
        assert float(stage.loss_fn(batch, ctx)) != pytest.approx(float(squared_loss(model(batch.x), batch.y)))


def test_aux_gradient_only_on_batch_rows_and_no_weight_decay() -> None:
    torch.manual_seed(0)
    n, k = 20, 3
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, k))
    aux = AuxiliaryLogits(n, k)
    optim = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    stage = amplify_stage(model, aux, aux_lambda=3.0, loss="mse", epochs=1, batch_size=4, optim=optim)
    ds = GroupDataset(x=torch.randn(n, 4), y=torch.randint(0, k, (n,)), n_classes=k)
    index = torch.tensor([2, 7, 11, 19])
    stage.loss_fn(ds.batch(index), StepContext("amplify", 0, 0, 1, 5)).backward()
    grad = aux.b.grad
    nonzero = torch.nonzero(grad.abs().sum(1) > 0).flatten()
    assert nonzero.tolist() == index.tolist()
    others = torch.ones(n, dtype=torch.bool)
    others[index] = False
    assert bool((grad[others] == 0).all())
    opt = build_optimizer(stage.parameters_to_optimize(), optim)
    (aux_group,) = [g for g in opt.param_groups if any(p is aux.b for p in g["params"])]
    assert aux_group["weight_decay"] == 0.0 and aux_group["params"] == [aux.b]
    (net_group,) = [g for g in opt.param_groups if g is not aux_group]
    assert net_group["weight_decay"] == 5e-4
    assert {id(p) for p in net_group["params"]} == {id(p) for p in model.parameters()}
    assert isinstance(opt, torch.optim.SGD) and aux_group["momentum"] == 0.9


def test_squared_loss_sums_classes_and_averages_batch_as_bam_official_utils_squared_loss() -> None:
    """BAM official code (github.com/motivationss/BAM): utils.squared_loss is MSELoss(reduction="none") summed
    over dim 1 (the classes); loss.py's LossComputer takes the batch mean."""
    z = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    y = torch.tensor([1, 0])
    # residuals (1, 1) and (-0.5, -1): per-example sums 2 and 1.25, mean over B = 2 examples
    assert float(squared_loss(z, y)) == pytest.approx(1.625)
    official = F.mse_loss(z, F.one_hot(y, 2).float(), reduction="none").sum(dim=1).mean()
    assert float(squared_loss(z, y)) == pytest.approx(float(official))
    # through the stage: logits = model(x) + λ·b[index]
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    aux = AuxiliaryLogits(3, 2)
    with torch.no_grad():
        aux.b[2] = torch.tensor([0.25, -0.5])
    ds = GroupDataset(x=torch.cat([z, torch.zeros(1, 2)]), y=torch.tensor([1, 0, 1]), n_classes=2)
    batch = ds.batch(torch.tensor([0, 2]))
    ctx = StepContext("amplify", 0, 0, 1, 1)
    with torch.no_grad():
        mse = amplify_stage(model, aux, aux_lambda=2.0, loss="mse", epochs=1, batch_size=2, optim=OptimConfig())
        # example 0: (1, 2) vs (0, 1) -> 1 + 1; example 2: (0.5, -1) vs (0, 1) -> 0.25 + 4; mean over 2 examples
        assert float(mse.loss_fn(batch, ctx)) == pytest.approx(6.25 / 2)
        ce = amplify_stage(model, aux, aux_lambda=2.0, loss="ce", epochs=1, batch_size=2, optim=OptimConfig())
        expected = F.cross_entropy(torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([1, 1]))
        assert float(ce.loss_fn(batch, ctx)) == pytest.approx(float(expected))


def test_stage2_continues_from_amplified_weights_or_restarts(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    bam(stage2_init="continue").fit(train, val, trainer=trainer)
    amplified = {
        k[len("model.") :]: v for k, v in clone_state(trainer.stages["amplify"].modules).items() if "model." in k
    }
    start = trainer.initial["upweight"]
    assert amplified.keys() == start.keys() and all(torch.equal(amplified[k], start[k]) for k in start)
    trainer = RecordingTrainer()
    bam(stage2_init="fresh").fit(train, val, trainer=trainer)
    amplified = {
        k[len("model.") :]: v for k, v in clone_state(trainer.stages["amplify"].modules).items() if "model." in k
    }
    start = trainer.initial["upweight"]
    assert all(not torch.equal(amplified[k], start[k]) for k in start)


def test_both_selections_are_reported_and_the_alternative_kept(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer(seed=4)  # a seed where the two rules pick different epochs
    method = bam(epochs=4, keep_alternative=True).fit(train, val, trainer=trainer)
    result = method.fit_result_
    assert result.selection == "val_worst_group"  # auto with validation attributes
    sel = result.extras["selections"]
    assert set(sel) == {"val_worst_group", "val_classdiff"}
    history = [h["val"] for h in result.stages[1].history]
    for rule, entry in sel.items():
        assert entry["epoch"] == select_best(history, rule) + 1
        assert entry["val"] == history[entry["epoch"] - 1]
    assert sel["val_worst_group"]["deployed"] and not sel["val_classdiff"]["deployed"]
    assert sel["val_worst_group"]["epoch"] == result.selected["epoch"] != sel["val_classdiff"]["epoch"]
    # the kept ClassDiff model is the weights of the epoch ClassDiff picks
    alt = method.alternative_models_["val_classdiff"]
    metrics = trainer.evaluate(alt, val, alt).metrics
    assert metrics["class_diff"] == pytest.approx(sel["val_classdiff"]["val"]["class_diff"])
    assert sel["val_classdiff"]["state_kept"]
    deployed = trainer.evaluate(method.model_, val, method.model_).metrics
    assert deployed["worst_group"] == pytest.approx(sel["val_worst_group"]["score"])


def test_label_free_run_end_to_end() -> None:
    train, val = toy_splits(one_hot=True, attrs=False)
    assert bool((train.attr == -1).all()) and bool((val.attr == -1).all())
    for selection in ("val_classdiff", "auto"):
        method = bam(selection=selection).fit(train, val, trainer=Trainer(progress=False))
        result = method.fit_result_
        assert result.selection == "val_classdiff"
        assert set(result.extras["selections"]) == {"val_classdiff"}
        assert "error_set_size" in result.extras and "error_set_precision" not in result.extras
        assert result.stages[1].score == pytest.approx(min(h["val"]["class_diff"] for h in result.stages[1].history))


def test_three_classes() -> None:
    train, val = toy_splits(384, 192, seed=2, n_classes=3, one_hot=True)
    method = bam(amplify_loss="ce", selection="val_classdiff").fit(train, val, trainer=Trainer(progress=False))
    result = method.fit_result_
    assert method.predict_logits(val.x[:5]).shape == (5, 3)
    assert result.extras["aux_table_bytes"] == 384 * 3 * 4
    assert set(result.extras["selections"]) == {"val_classdiff", "val_worst_group"}


def test_resume_in_upweight_stage_reproduces_the_run(toy, tmp_path) -> None:
    train, val = toy

    def checkpoint_kept(cut) -> None:
        assert (cut / "checkpoints" / "upweight.last.pt").exists()

    kw = {"epochs": 4, "keep_alternative": True}
    full, resumed = full_and_resumed(
        lambda: bam(**kw), train, val, tmp_path, epoch=3, seed=4, stage="upweight", between=checkpoint_kept
    )
    assert resumed.fit_result_.stages[0].resumed and not resumed.fit_result_.stages[1].resumed
    assert torch.equal(resumed.error_set_, full.error_set_)
    assert_same_run(full, resumed)
    assert repr(resumed.fit_result_.extras) == repr(full.fit_result_.extras)
    assert_same_weights(*(m.alternative_models_["val_classdiff"] for m in (full, resumed)))


def test_hparam_table_and_validation() -> None:
    wb = BAM(dataset="waterbirds")
    hp = wb.hparams
    assert (hp.aux_lambda, hp.amplify_epochs, hp.mu) == (50.0, 21, 140)
    assert (hp.upweight_lr, hp.upweight_weight_decay, hp.batch_size, hp.optimizer) == (1e-5, 1.0, 64, "sgd")
    assert wb.hparam_sources["amplify_epochs"].startswith("BAM official code")
    # stage 1 on Waterbirds: BAM official run_metaScript.py, CUB branch (not the ERM preset's 1e-3 / 1e-4)
    assert (hp.lr, hp.weight_decay) == (1e-5, 0.0)
    assert "run_metaScript.py" in wb.hparam_sources["lr"] and "run_metaScript.py" in wb.hparam_sources["weight_decay"]
    celeba = BAM(dataset="celeba").hparams  # run_metaScript.py, CelebA branch
    assert (celeba.lr, celeba.weight_decay, celeba.upweight_lr, celeba.upweight_weight_decay) == (1e-5, 0.0, 1e-5, 0.1)
    assert celeba.batch_size == 128
    cm = BAM(dataset="colored_mnist")
    assert (cm.hparams.optimizer, cm.hparams.momentum) == ("sgd", 0.9)
    assert (cm.hparams.aux_lambda, cm.hparams.amplify_epochs, cm.hparams.mu) == (5.0, 10, 300)
    assert cm.hparam_sources["mu"].startswith("ours: best validation")
    # the tuned lr 0.05 was for the class-averaged loss: / K = 10 under the summed loss, stage 2 unchanged
    assert (cm.hparams.lr, cm.hparams.upweight_lr) == (0.005, 0.05)
    assert BAM(mu="3", aux_lambda="0.5").hparams.mu == 3
    for bad in (
        {"amplify_epochs": 0},
        {"mu": 0},
        {"mu": 1.5},
        {"aux_lambda": -1.0},
        {"aux_lambda": float("nan")},
        {"amplify_loss": "l1"},
        {"stage2_init": "x"},
        {"upweight_lr": 0.0},
        {"upweight_weight_decay": -1.0},
    ):
        with pytest.raises(ConfigError):
            BAM(**bad)


def test_celeba_uses_run_metascript_values_not_waterbirds() -> None:
    """BAM official run_metaScript.py (github.com/motivationss/BAM): the CelebA branch overrides only the learning
    rates, weight decays and batch size, so CelebA runs its argparse defaults: --stageTwo_epochs 30,
    --aux_lambda 0.5, --stageOne_epochs 21; μ (--up_weights) has no default and stays Waterbirds' 140, named as
    unverified."""
    celeba = BAM(dataset="celeba")
    hp, src = celeba.hparams, celeba.hparam_sources
    assert (hp.epochs, hp.aux_lambda, hp.amplify_epochs, hp.mu, hp.batch_size) == (30, 0.5, 21, 140, 128)
    assert all("run_metaScript.py" in src[k] for k in ("epochs", "aux_lambda", "amplify_epochs", "lr", "batch_size"))
    assert "could not be checked" in src["aux_lambda"] and "unverified" in src["mu"]
    assert src["aux_lambda"] != BAM(dataset="waterbirds").hparam_sources["aux_lambda"]


def test_biased_mnist_row_takes_the_colored_mnist_steps() -> None:
    """The `bmnist` suite gives every method its Colored MNIST settings: BAM's stage-1 SGD lr is the Colored MNIST
    preset's (tuned for the class-summed squared loss), and its stage lengths, λ, μ and stage-2 weight decay are the
    `cmnist` suite's."""
    from debiaslab.bench.suite import load_suite

    bmnist = {m.method: m.hparams for m in load_suite("bmnist").methods}["bam"]
    cmnist = {m.method: m.hparams for m in load_suite("cmnist").methods}["bam"]
    preset = BAM(dataset="colored_mnist").hparams
    assert (bmnist["optimizer"], bmnist["lr"]) == (preset.optimizer, preset.lr) == ("sgd", 0.005)
    shared = ("aux_lambda", "mu", "amplify_epochs", "upweight_weight_decay", "epochs")
    assert {k: bmnist[k] for k in shared} == {k: cmnist[k] for k in shared}
