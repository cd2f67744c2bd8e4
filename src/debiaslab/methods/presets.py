"""Training settings shared by several methods' hyperparameter tables, each value with its source."""

from __future__ import annotations

from debiaslab.methods.hparams import Default

LFF_PAPER = "LfF paper (Nam et al. 2020), Colored MNIST setting"
OURS_CMNIST_SELECTION = "ours: Colored MNIST reports unbiased accuracy, and our validation split is unbiased"

#: The LfF Colored MNIST recipe (MLP 3x100, Adam 1e-3, batch 256, 100 epochs), used by ERM and the baselines.
CMNIST_MLP: dict[str, Default] = {
    "model": Default("mlp", LFF_PAPER),
    "epochs": Default(100, LFF_PAPER),
    "batch_size": Default(256, LFF_PAPER),
    "optimizer": Default("adam", LFF_PAPER),
    "lr": Default(1e-3, LFF_PAPER),
    "weight_decay": Default(0.0, LFF_PAPER),
    "selection": Default("val_unbiased", OURS_CMNIST_SELECTION),
}
