"""Biased MNIST (ReBias protocol) on real MNIST: conflicting counts, colour assignment rates, background-only
colouring, protocols, determinism, cache, option errors, the paper preset's model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from debiaslab.data import DatasetBundle, build_dataset
from debiaslab.data.biased_mnist import BACKGROUND_COLOURS, N_CONFUSING, background_attributes
from debiaslab.data.mnist import MnistArrays, load_mnist
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.models import build_model

# Conflicting training images on all 60 000 (paper protocol), ReBias release rule (int(n*rho) own colour per class).
REBIAS_CONFLICTING = {0.999: 63, 0.997: 184, 0.995: 305, 0.99: 606}


@pytest.fixture(scope="module")
def mnist(data_root: Path) -> MnistArrays:
    return load_mnist(data_root, download=False)


@pytest.fixture(scope="module")
def bmnist(data_root: Path, cache_dir: Path):
    built: dict[tuple[float, str], DatasetBundle] = {}

    def get(rho: float = 0.99, protocol: str = "default") -> DatasetBundle:
        if (rho, protocol) not in built:
            built[rho, protocol] = build_dataset(
                "biased_mnist", data_root, cache_dir, rho=rho, protocol=protocol, download=False
            )
        return built[rho, protocol]

    return get


@pytest.mark.parametrize("rho", sorted(REBIAS_CONFLICTING))
def test_conflicting_counts_on_all_60000_match_the_release(mnist: MnistArrays, rho: float) -> None:
    attr = background_attributes(mnist.train_y, rho, np.random.default_rng(0))
    assert int((mnist.train_y != attr).sum()) == REBIAS_CONFLICTING[rho]


def test_paper_protocol_colours_all_60000_training_images(bmnist) -> None:
    train = bmnist(0.99, "paper").train
    assert len(train) == 60000 and int((train.y != train.attr).sum()) == REBIAS_CONFLICTING[0.99]


def test_per_class_counts_follow_the_fixed_count_rule(mnist: MnistArrays) -> None:
    """Per class: exactly int(n*rho) own colour; the rest in chunks of ceil(rest/9), one other colour each."""
    attr = background_attributes(mnist.train_y, 0.997, np.random.default_rng(3))
    for c in range(10):
        a = attr[mnist.train_y == c]
        n = len(a)
        assert int((a == c).sum()) == int(n * 0.997)
        rest = n - int(n * 0.997)
        chunk = -(-rest // N_CONFUSING)
        other = np.bincount(a[a != c], minlength=10)
        used = other[other > 0]
        assert used.sum() == rest and len(used) == -(-rest // chunk)
        assert (np.sort(used)[1:] == chunk).all()  # every chunk is full but possibly the last one


def test_evaluation_splits_are_unbiased_rho_01(bmnist) -> None:
    """The release's unbiased setting: int(0.1 n) own colour, the rest spread over the nine others (≈10 % each)."""
    b = bmnist()
    for split in (b.val, b.test):
        y, a = split.y.numpy(), split.attr.numpy()
        table = np.zeros((10, 10))
        np.add.at(table, (y, a), 1)
        rates = table / table.sum(1, keepdims=True)
        assert np.allclose(rates, 0.1, atol=0.012), split.split
        assert abs(float((y == a).mean()) - 0.1) < 0.005


def test_default_protocol_holds_out_a_stratified_unbiased_validation_split(bmnist) -> None:
    b = bmnist()
    assert (len(b.train), len(b.val), len(b.test)) == (54000, 6000, 10000)
    assert b.selection == "val" and b.val.split == "val"
    counts = np.bincount(b.val.y.numpy(), minlength=10)
    assert (abs(counts - 600) <= 80).all()
    conflicting = (b.train.y != b.train.attr).float().mean().item()
    assert 0.0095 < conflicting < 0.0105


def test_paper_protocol_selects_on_test_and_says_so(bmnist) -> None:
    b = bmnist(0.99, "paper")
    assert b.selection == "test" and b.val is b.test and any("protocol='paper'" in n for n in b.notes)


def test_background_is_coloured_and_the_digit_is_white(bmnist, mnist: MnistArrays) -> None:
    b = bmnist(0.99, "paper")
    x = b.train.x.numpy()
    grey, attr = mnist.train_y, b.train.attr.numpy()
    assert grey.shape == attr.shape
    digit = mnist.train_x[:500] != 0
    assert (x[:500].transpose(0, 2, 3, 1)[digit] == 255).all()
    background = np.broadcast_to(BACKGROUND_COLOURS[attr[:500]][:, None, None, :], (500, 28, 28, 3))[~digit]
    assert (x[:500].transpose(0, 2, 3, 1)[~digit] == background).all()


def test_inputs_are_normalised_like_the_release(bmnist) -> None:
    batch = bmnist().train.batch(torch.arange(8))
    assert batch.x.dtype == torch.float32 and batch.x.shape == (8, 3, 28, 28)
    assert float(batch.x.max()) == 1.0 and float(batch.x.min()) >= -1.0


def test_same_recipe_is_deterministic_and_data_seed_changes_the_assignment(data_root, tmp_path) -> None:
    a = build_dataset("biased_mnist", data_root, tmp_path / "a", rho=0.995, protocol="paper")
    b = build_dataset("biased_mnist", data_root, tmp_path / "b", rho=0.995, protocol="paper")
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.attr, b.train.attr)
    assert len(list((tmp_path / "a" / "biased_mnist").glob("*.npz"))) == 1
    cached = build_dataset("biased_mnist", data_root, tmp_path / "a", rho=0.995, protocol="paper")
    assert torch.equal(a.train.x, cached.train.x)
    y = a.train.y.numpy()
    other = background_attributes(y, 0.995, np.random.default_rng(1))
    assert not np.array_equal(other, background_attributes(y, 0.995, np.random.default_rng(2)))


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({"rho": 0.0}, "rho 0.0 is outside"),
        ({"rho": "high"}, "rho='high': expected float"),
        ({"protocol": "x"}, "unknown Biased MNIST protocol"),
        ({"val_fraction": 1.5}, "val_fraction 1.5"),
        ({"data_seed": -1}, "data_seed -1"),
    ],
)
def test_bad_options_are_one_line_config_errors(opts: dict, expected: str, data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=expected):
        build_dataset("biased_mnist", data_root, tmp_path, **opts)


def test_paper_preset_is_rebias_simpleconvnet() -> None:
    """Pinned to the ReBias release (main_biased_mnist.py): SimpleConvNet, Adam 1e-3, wd 1e-4, step 20, 80 epochs."""
    hp = get_method("erm")(dataset="biased_mnist").hparams
    assert (hp.model, hp.optimizer, hp.lr, hp.weight_decay, hp.epochs, hp.batch_size) == (
        "cnn_rebias",
        "adam",
        1e-3,
        1e-4,
        80,
        256,
    )
    assert (hp.scheduler, hp.lr_step_size, hp.lr_gamma, hp.selection) == ("step", 20, 0.1, "val_unbiased")
    model = build_model("cnn_rebias", (3, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (w, (7, 7), (1, 1), (3, 3)) for w in (16, 32, 64, 128)
    ]
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
