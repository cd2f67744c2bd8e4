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
    "epochs": Default(300, GROUPDRO_PAPER),
    "batch_size": Default(128, GROUPDRO_PAPER),
    "optimizer": Default("sgd", GROUPDRO_PAPER),
    "momentum": Default(0.9, GROUPDRO_PAPER),
    "lr": Default(1e-3, GROUPDRO_PAPER),
    "weight_decay": Default(1e-4, GROUPDRO_PAPER),
}
CELEBA_RESNET50: dict[str, Default] = {
    **WATERBIRDS_RESNET50,
    "epochs": Default(50, GROUPDRO_PAPER),
    "lr": Default(1e-4, GROUPDRO_PAPER),
}
#: Corrupted CIFAR-10 (LfF protocol) with a ResNet-20.
CCIFAR10_RESNET20: dict[str, Default] = {
    "model": Default("resnet20", LFF_CONFIG_CIFAR),
    "epochs": Default(200, LFF_CONFIG_CIFAR),
    "batch_size": Default(256, LFF_CONFIG_CIFAR),
    "optimizer": Default("adam", LFF_CONFIG_CIFAR),
    "lr": Default(1e-3, LFF_CONFIG_CIFAR),
    "weight_decay": Default(0.0, LFF_CONFIG_CIFAR),
}
#: BFFHQ (DFA release) with a ResNet-18 trained from scratch.
BFFHQ_RESNET18: dict[str, Default] = {
    "model": Default("resnet18", DFA_PAPER),
    "epochs": Default(160, DFA_PAPER),
    "batch_size": Default(64, DFA_PAPER),
    "optimizer": Default("adam", DFA_PAPER),
    "lr": Default(1e-4, DFA_PAPER),
    "weight_decay": Default(0.0, DFA_PAPER),
}

OURS_BMNIST_SELECTION = "ours: Biased MNIST reports unbiased accuracy, and our validation split is unbiased"
REBIAS_RELEASE = (
    "ReBias release (Bahng et al. 2020, clovaai/rebias main_biased_mnist.py): SimpleConvNet, Adam 1e-3, weight decay "
    "1e-4, lr x0.1 every 20 epochs, 80 epochs, batch 256"
)
#: Biased MNIST (ReBias protocol) with ReBias's SimpleConvNet (about 0.4 G multiply-adds per image: a GPU preset).
BMNIST_REBIAS: dict[str, Default] = {
    "model": Default("cnn_rebias", REBIAS_RELEASE),
    "epochs": Default(80, REBIAS_RELEASE),
    "batch_size": Default(256, REBIAS_RELEASE),
    "optimizer": Default("adam", REBIAS_RELEASE),
    "lr": Default(1e-3, REBIAS_RELEASE),
    "weight_decay": Default(1e-4, REBIAS_RELEASE),
    "scheduler": Default("step", REBIAS_RELEASE),
    "lr_step_size": Default(20, REBIAS_RELEASE),
    "lr_gamma": Default(0.1, REBIAS_RELEASE),
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
