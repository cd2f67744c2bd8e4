"""Hyperparameter defaults from the data: a dataset's training preset and default backbone reach the method only
where neither the method's table nor the user chose."""

from __future__ import annotations

from types import SimpleNamespace

from debiaslab.methods import get_method
from debiaslab.run.train import RunConfig, with_dataset_model


def test_dataset_preset_sits_under_the_method_rows() -> None:
    erm = get_method("erm")(dataset="waterbirds")
    assert (erm.hparams.model, erm.hparams.optimizer, erm.hparams.epochs) == ("resnet50", "sgd", 300)
    assert "GroupDRO" in erm.hparam_sources["model"]
    bam = get_method("bam")(dataset="waterbirds")  # BAM's own Waterbirds row wins over the generic preset
    assert (bam.hparams.epochs, bam.hparams.batch_size, bam.hparams.mu) == (150, 64, 140)
    assert get_method("erm")(dataset="waterbirds", model="mlp").hparams.model == "mlp"  # the user wins


def test_dataset_default_model_only_when_nothing_chose_one() -> None:
    bundle = SimpleNamespace(default_model="resnet18")
    cfg = RunConfig(method="erm", dataset="folder")
    swapped = with_dataset_model(get_method("erm")(dataset="folder"), cfg, bundle)
    assert swapped.hparams.model == "resnet18" and "default model" in swapped.hparam_sources["model"]
    user = RunConfig(method="erm", dataset="folder", hparams={"model_kwargs": {"width": 8}})
    kept = with_dataset_model(get_method("erm")(dataset="folder", model_kwargs={"width": 8}), user, bundle)
    assert kept.hparams.model == "mlp"
    preset = with_dataset_model(get_method("erm")(dataset="colored_mnist"), cfg, SimpleNamespace(default_model="x"))
    assert preset.hparams.model == "mlp"  # the Colored MNIST preset chose the MLP
