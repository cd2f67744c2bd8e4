"""Engine: samplers, selection, determinism, NaN handling and resume on tiny synthetic data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from debiaslab.data.core import GroupDataset
from debiaslab.engine.sampling import (
    IndexListSampler,
    UniformSampler,
    WeightedSampler,
    group_balanced_sampler,
    inverse_frequency_weights,
    iterate_batches,
    subsample_groups,
    upsample_indices,
)
from debiaslab.engine.stage import Stage
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, TrainingError
from debiaslab.methods.erm import ERM
from debiaslab.models import build_model
from toys import assert_same_run, full_and_resumed, resume, tiny_mlp, toy_splits


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits()


def erm(**kw) -> ERM:
    return ERM(**tiny_mlp(), **kw)


# ---------------------------------------------------------------------------------------------- samplers
def test_upsample_indices_counts_exactly() -> None:
    idx = upsample_indices(6, torch.tensor([1, 4]), times=5)
    counts = torch.bincount(idx, minlength=6)
    assert counts.tolist() == [1, 5, 1, 1, 5, 1]
    with pytest.raises(ConfigError):
        upsample_indices(3, torch.tensor([0]), times=0)


def test_samplers_are_deterministic_per_epoch_and_cover_data() -> None:
    s = UniformSampler(10)
    a = s.epoch_indices(0, torch.Generator().manual_seed(1))
    b = s.epoch_indices(0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(10))
    lst = IndexListSampler(torch.tensor([0, 0, 3]))
    assert sorted(lst.epoch_indices(0, torch.Generator().manual_seed(0)).tolist()) == [0, 0, 3]


def test_inverse_frequency_and_group_balanced_sampling() -> None:
    groups = torch.tensor([0] * 90 + [1] * 10)
    w = inverse_frequency_weights(groups, 2)
    assert w.mean().item() == pytest.approx(1.0)
    assert (w[95] / w[0]).item() == pytest.approx(9.0)
    w_sqrt = inverse_frequency_weights(groups, 2, power=0.5)
    assert (w_sqrt[95] / w_sqrt[0]).item() == pytest.approx(3.0)
    draws = group_balanced_sampler(groups, 2, num_samples=20000).epoch_indices(0, torch.Generator().manual_seed(0))
    share = (groups[draws] == 1).float().mean().item()
    assert 0.47 < share < 0.53
    with pytest.raises(ConfigError):
        WeightedSampler(torch.zeros(3))


def test_subsample_groups_keeps_min_count_per_group() -> None:
    groups = torch.tensor([0] * 7 + [1] * 3 + [2] * 5)
    kept = subsample_groups(groups, 4, torch.Generator().manual_seed(0))
    assert torch.bincount(groups[kept], minlength=4).tolist() == [3, 3, 3, 0]


def test_iterate_batches_slices() -> None:
    sizes = [b.numel() for b in iterate_batches(torch.arange(10), 4)]
    assert sizes == [4, 4, 2]
    assert [b.numel() for b in iterate_batches(torch.arange(10), 4, drop_last=True)] == [4, 4]


# ---------------------------------------------------------------------------------------------- training
def test_erm_learns_and_selection_keeps_the_best_epoch(toy) -> None:
    train, val = toy
    method = erm(epochs=4, selection="val_worst_group").fit(train, val, trainer=Trainer(progress=False))
    result = method.fit_result_
    scores = [h["val"]["worst_group"] for h in result.history]
    assert result.selected["epoch"] == 1 + max(range(len(scores)), key=lambda i: (scores[i], -i))
    report = method.evaluate(val)
    assert report.metrics["worst_group"] == pytest.approx(max(scores))
    assert report.metrics["aligned"] > 0.9  # the shortcut is learned on aligned groups


def test_same_seed_same_metrics_and_different_seed_differs(toy) -> None:
    train, val = toy
    runs = [erm(epochs=2).fit(train, val, trainer=Trainer(progress=False, seed=s)) for s in (3, 3, 4)]
    h = [r.fit_result_.history[-1]["val"] for r in runs]
    assert repr(h[0]) == repr(h[1])  # repr: NaN entries compare equal
    w0, w2 = (next(iter(r.model_.parameters())) for r in (runs[0], runs[2]))
    assert not torch.equal(w0, w2)


def test_bf16_autocast_runs(toy) -> None:
    train, val = toy
    method = erm(epochs=1).fit(train, val, trainer=Trainer(progress=False, precision="bf16"))
    assert method.fit_result_.history[0]["train_loss"] > 0


def test_resume_after_interruption_matches_uninterrupted_run(toy, tmp_path) -> None:
    train, val = toy

    def checkpoint_kept(cut) -> None:
        assert (cut / "checkpoints" / "erm.last.pt").exists()

    full, resumed = full_and_resumed(
        lambda: erm(epochs=5), train, val, tmp_path, epoch=3, seed=7, between=checkpoint_kept
    )
    assert_same_run(full, resumed)
    # a finished stage is restored, not retrained
    again = resume(erm(epochs=5), train, val, tmp_path / "cut", seed=7)
    assert again.fit_result_.stages[0].resumed


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(toy, tmp_path) -> None:
    train, val = toy
    model = build_model("mlp", train.input_shape, 2, width=8, depth=1)
    steps_per_epoch = -(-len(train) // 64)

    def loss(batch, ctx):
        out = F.cross_entropy(model(batch.x), batch.y)
        return out * float("nan") if ctx.step == steps_per_epoch + 2 else out

    def build() -> Stage:
        return Stage("s", model, loss, model, UniformSampler(len(train)), epochs=3, batch_size=64)

    trainer = Trainer(progress=False, run_dir=tmp_path)
    with pytest.raises(TrainingError, match=r"epoch 2, step 11.*last good checkpoint kept"):
        trainer.run_stage("s", build, train, val)
    assert (tmp_path / "checkpoints" / "s.last.pt").exists()


def test_selection_needing_groups_on_unlabelled_val_fails_before_training(toy) -> None:
    from debiaslab.errors import MissingLabelsError

    train, val = toy
    unlabelled = GroupDataset(x=val.x, y=val.y, n_classes=2, n_attrs=2, name="toy", split="val")
    with pytest.raises(MissingLabelsError, match="val_worst_group"):
        erm(epochs=1, selection="val_worst_group").fit(train, unlabelled)
    # auto falls back to a label-free rule
    method = erm(epochs=1).fit(train, unlabelled, trainer=Trainer(progress=False))
    assert method.fit_result_.selection == "val_worst_class"


def test_unknown_hparam_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"no hyperparameter 'lrr'.*lr"):
        ERM(lrr=1)


def test_hparam_table_records_sources() -> None:
    m = ERM(dataset="colored_mnist", epochs=3)
    assert m.hparams.lr == 1e-3 and m.hparam_sources["lr"].startswith("LfF paper")
    assert m.hparam_sources["epochs"] == "user"


def test_scheduler_options_reach_the_optimiser(toy) -> None:
    train, val = toy
    method = erm(epochs=3, scheduler="multistep", lr_milestones=[1, 2], lr_gamma=0.5)
    method.fit(train, val, trainer=Trainer(progress=False))
    lrs = [h["lr"] for h in method.fit_result_.history]
    assert lrs == pytest.approx([1e-2, 5e-3, 2.5e-3])


def test_replaced_dataset_keeps_what_is_not_changed() -> None:
    train, _ = toy_splits(32, 8, 0.1, n_features=4)
    attr = torch.zeros(len(train), dtype=torch.long)
    relabelled = train.replaced(attr=attr)
    assert relabelled.x is train.x and torch.equal(relabelled.y, train.y) and torch.equal(relabelled.attr, attr)
    assert (relabelled.n_attrs, relabelled.aligned_groups, relabelled.split) == (
        train.n_attrs,
        train.aligned_groups,
        train.split,
    )
    embedded = train.replaced(x=torch.ones(len(train), 3), transform=None, split="val")
    assert embedded.loader is None and embedded.input_shape == (3,) and embedded.split == "val"
    hidden = train.without_attributes()
    assert not hidden.has_attrs and hidden.n_attrs == 1 and hidden.aligned_groups == frozenset()
