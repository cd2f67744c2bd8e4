"""Training settings shared by several methods' hyperparameter tables, each value with its source."""

from __future__ import annotations

from typing import Any

from debiaslab.methods.hparams import Default


def from_source(source: str, **values: Any) -> dict[str, Default]:
    """``{name: Default(value, source)}``: several settings read from one source, in the order given."""
    return {name: Default(value, source) for name, value in values.items()}


LFF_PAPER = "LfF paper (Nam et al. 2020), Colored MNIST setting"
OURS_CMNIST_SELECTION = "ours: Colored MNIST reports unbiased accuracy, and our validation split is unbiased"

#: The LfF Colored MNIST recipe (MLP 3x100, Adam 1e-3, batch 256, 100 epochs), used by ERM and the baselines.
CMNIST_MLP: dict[str, Default] = {
    **from_source(LFF_PAPER, model="mlp", epochs=100, batch_size=256, optimizer="adam", lr=1e-3, weight_decay=0.0),
    "selection": Default("val_unbiased", OURS_CMNIST_SELECTION),
}

GROUPDRO_PAPER = "GroupDRO paper (Sagawa et al. 2020): standard training of an ImageNet-pretrained ResNet-50"
LFF_CONFIG_CIFAR = "LfF official config (corrupted_cifar10: ResNet20, Adam 1e-3, batch 256, 196 x 200 steps)"
DFA_PAPER = "DFA paper (Lee et al. 2021), BFFHQ: ResNet-18, Adam 1e-4, batch 64, 50K iterations (~160 epochs)"
PRETRAINED_NOTE = (
    "; pass model_kwargs={pretrained: imagenet} (torchvision's weights, fetched with their checksum) or a local "
    "file for the ImageNet start"
)

#: Waterbirds / CelebA with a ResNet-50 (224 x 224 crops, ImageNet normalisation by the dataset).
WATERBIRDS_RESNET50: dict[str, Default] = {
    "model": Default("resnet50", GROUPDRO_PAPER + PRETRAINED_NOTE),
    **from_source(
        GROUPDRO_PAPER, epochs=300, batch_size=128, optimizer="sgd", momentum=0.9, lr=1e-3, weight_decay=1e-4
    ),
}
CELEBA_RESNET50: dict[str, Default] = {
    **WATERBIRDS_RESNET50,
    "epochs": Default(50, GROUPDRO_PAPER),
    "lr": Default(1e-4, GROUPDRO_PAPER),
}
#: Corrupted CIFAR-10 (LfF protocol) with a ResNet-20.
CCIFAR10_RESNET20: dict[str, Default] = {
    **from_source(
        LFF_CONFIG_CIFAR, model="resnet20", epochs=200, batch_size=256, optimizer="adam", lr=1e-3, weight_decay=0.0
    ),
}
#: BFFHQ (DFA release) with a ResNet-18 trained from scratch.
BFFHQ_RESNET18: dict[str, Default] = {
    **from_source(DFA_PAPER, model="resnet18", epochs=160, batch_size=64, optimizer="adam", lr=1e-4, weight_decay=0.0),
}

OURS_BMNIST_SELECTION = "ours: Biased MNIST reports unbiased accuracy, and our validation split is unbiased"
REBIAS_RELEASE = (
    "ReBias release (Bahng et al. 2020, clovaai/rebias main_biased_mnist.py): SimpleConvNet, Adam 1e-3, weight decay "
    "1e-4, lr x0.1 every 20 epochs, 80 epochs, batch 256"
)
#: Biased MNIST (ReBias protocol) with ReBias's SimpleConvNet (about 0.4 G multiply-adds per image: a GPU preset).
BMNIST_REBIAS: dict[str, Default] = {
    **from_source(
        REBIAS_RELEASE,
        model="cnn_rebias",
        epochs=80,
        batch_size=256,
        optimizer="adam",
        lr=1e-3,
        weight_decay=1e-4,
        scheduler="step",
        lr_step_size=20,
        lr_gamma=0.1,
    ),
    "selection": Default("val_unbiased", OURS_BMNIST_SELECTION),
}

#: Dataset name -> the training preset above; a method's hparam table can start from ``DATASET_PRESETS[name]``.
DATASET_PRESETS: dict[str, dict[str, Default]] = {
    "colored_mnist": CMNIST_MLP,
    "biased_mnist": BMNIST_REBIAS,
    "waterbirds": WATERBIRDS_RESNET50,
    "celeba": CELEBA_RESNET50,
    "corrupted_cifar10": CCIFAR10_RESNET20,
    "bffhq": BFFHQ_RESNET18,
}

#: Where the SubpopBench and DomainBed settings of the methods they implement are read (file names cited per value).
SUBPOP_REGISTRY = "SubpopBench (YyzHarry/SubpopBench, subpopbench/hparams_registry.py)"
SUBPOP_ALGORITHMS = "SubpopBench (YyzHarry/SubpopBench, subpopbench/learning/algorithms.py)"
DOMAINBED_REGISTRY = "DomainBed (facebookresearch/DomainBed, domainbed/hparams_registry.py)"
