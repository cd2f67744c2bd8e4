"""Backbones: registry, the features/head contract, standard architectures, pretrained loading."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from debiaslab.errors import ConfigError
from debiaslab.models import (
    Backbone,
    build_model,
    count_parameters,
    list_models,
    load_pretrained,
    model_options,
)
from debiaslab.models.pretrained import IMAGENET_WEIGHTS, fetch_weights
from toys import hash_named_weights, torchvision_resnet18_state

BUILTIN = {"mlp", "cnn_rest", "cnn3", "cnn4", "resnet18", "resnet18_cifar", "resnet20", "resnet50"}


def _shape(name: str) -> tuple[int, int, int]:
    return (3, 64, 64) if name == "resnet50" else (3, 32, 32)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_registry_lists_builtin_models() -> None:
    assert set(list_models()) >= BUILTIN
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", sorted(BUILTIN - {"resnet50"}))
def test_contract_features_head_forward(name: str) -> None:
    shape = _shape(name)
    model = build_model(name, shape, 5).eval()
    assert isinstance(model, Backbone)
    assert isinstance(model.head, nn.Linear)
    assert model.head.in_features == model.feature_dim and model.n_classes == 5
    x = torch.rand(2, *shape)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (2, model.feature_dim)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits, model.head(feats))
    # channels_last memory format and bf16 autocast on CPU
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, 5) and torch.isfinite(out.float()).all()


def test_resnet50_forward_channels_last_bf16() -> None:
    model = build_model("resnet50", (3, 64, 64), 3)
    x = torch.rand(2, 3, 64, 64).to(memory_format=torch.channels_last)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().sum().backward()
    assert out.shape == (2, 3) and model.feature_dim == 2048
    assert model.conv1.weight.grad is not None
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.features(x)))


def test_training_step_backpropagates() -> None:
    model = build_model("resnet20", (3, 32, 32), 10)
    loss = nn.functional.cross_entropy(model(torch.rand(2, 3, 32, 32)), torch.tensor([1, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lff_mlp_shapes_and_parameter_count() -> None:
    model = build_model("mlp", (3, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2352, 100),
        (100, 100),
        (100, 100),
        (100, 10),
    ]
    assert count_parameters(model) == 2352 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10
    assert model.features(torch.rand(2, 3, 28, 28)).min() >= 0  # ReLU features


@pytest.mark.parametrize("depth", [0, 2, 4])
def test_mlp_depth_options(depth: int) -> None:
    model = build_model("mlp", (3, 28, 28), 10, depth=depth, width=16)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert n_linear == depth + 1
    assert model.feature_dim == (16 if depth else 2352)
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 10)


def test_mlp_bad_depth() -> None:
    with pytest.raises(ConfigError, match="depth"):
        build_model("mlp", (3, 28, 28), 10, depth=-1)


@pytest.mark.parametrize(("name", "expected"), [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_resnet_imagenet_parameter_counts(name: str, expected: int) -> None:
    model = build_model(name, (3, 224, 224), 1000)
    assert count_parameters(model) == expected


def test_resnet20_size_and_shortcuts() -> None:
    a = build_model("resnet20", (3, 32, 32), 10)
    b = build_model("resnet20", (3, 32, 32), 10, shortcut="B")
    assert count_parameters(a) == 269_722  # the paper's 0.27 M
    assert 0.26e6 < count_parameters(b) < 0.28e6
    assert a.feature_dim == 64 and not hasattr(a, "layer4")


def test_resnet_imagenet_key_layout() -> None:
    keys18 = set(build_model("resnet18", (3, 32, 32), 1000).state_dict())
    assert {
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer4.1.bn2.weight",
        "head.weight",
        "head.bias",
    } <= keys18
    assert len(keys18) == 122
    keys50 = set(build_model("resnet50", (3, 32, 32), 1000).state_dict())
    assert {"layer1.0.conv3.weight", "layer1.0.bn3.bias", "layer1.0.downsample.0.weight"} <= keys50
    assert len(keys50) == 320


def test_resnet_stems_and_zero_init() -> None:
    cifar = build_model("resnet18", (3, 32, 32), 2, stem="cifar")
    assert cifar.conv1.kernel_size == (3, 3) and isinstance(cifar.maxpool, nn.Identity)
    assert count_parameters(cifar) == count_parameters(build_model("resnet18_cifar", (3, 32, 32), 2))
    z = build_model("resnet50", (3, 32, 32), 2, zero_init_residual=True)
    assert torch.count_nonzero(z.layer1[0].bn3.weight) == 0
    assert torch.all(z.bn1.weight == 1)
    with pytest.raises(ConfigError, match="stem"):
        build_model("resnet18", (3, 32, 32), 2, stem="tiny")


def test_cnn_variants() -> None:
    rest = build_model("cnn_rest", (3, 28, 28), 10)
    convs = [m for m in rest.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (64, (4, 4), (2, 2), (1, 1)),
        (128, (4, 4), (2, 2), (1, 1)),
        (256, (4, 4), (2, 2), (1, 1)),
    ]
    assert rest(torch.rand(2, 3, 28, 28)).shape == (2, 10)
    c3 = build_model("cnn3", (3, 32, 32), 10, channels=(32, 64, 64), kernel_size=5, padding=0)
    assert c3.feature_dim == 64 and c3(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    c4 = build_model("cnn4", (3, 32, 32), 2, downsample="stride", channels=(8, 8, 16, 16))
    assert c4.feature_dim == 16 and c4(torch.rand(2, 3, 32, 32)).shape == (2, 2)
    with pytest.raises(ConfigError, match="too small"):
        build_model("cnn4", (3, 8, 8), 2, kernel_size=7, padding=0)
    with pytest.raises(ConfigError, match="exactly 3"):
        build_model("cnn3", (3, 32, 32), 2, channels=(8, 8))
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        build_model("resnet18", (2352,), 2)


def test_unknown_model_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet81'.*Did you mean.*resnet18"):
        build_model("resnet81", (3, 32, 32), 2)


def test_unknown_kwarg_names_it_and_lists_accepted() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("mlp", (3, 28, 28), 10, widht=50)
    msg = str(info.value)
    assert "'widht'" in msg and "width" in msg and "depth" in msg and "Did you mean width" in msg
    assert model_options("mlp") == {"width": 100, "depth": 3}
    with pytest.raises(ConfigError, match="pretrained"):
        build_model("resnet20", (3, 32, 32), 10, pretrained="x.pt")


def test_bad_n_classes() -> None:
    with pytest.raises(ConfigError, match="n_classes"):
        build_model("mlp", (3, 28, 28), 0)


def test_count_parameters_trainable_only() -> None:
    model = build_model("mlp", (4,), 2, width=3, depth=1)
    for p in model.body.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == 4 * 3 + 3 + 3 * 2 + 2
    assert count_parameters(model, trainable_only=True) == 3 * 2 + 2


def test_reset_head() -> None:
    model = build_model("resnet20", (3, 32, 32), 10)
    head = model.reset_head(3)
    assert model.head is head and head.in_features == 64 and model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def _imagenet_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {("fc." + k[5:] if k.startswith("head.") else k): v for k, v in state.items()}


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model_module"])
def test_load_pretrained_round_trip(tmp_path, caplog, wrap: str) -> None:
    source = build_model("resnet18", (3, 32, 32), 10)
    state = _imagenet_style(source.state_dict())
    assert "fc.weight" in state
    if wrap == "state_dict":
        payload: object = {"state_dict": state, "epoch": 3}
    elif wrap == "model_module":
        payload = {"model": {"module." + k: v for k, v in state.items()}}
    else:
        payload = state
    path = tmp_path / "r18.pth"
    torch.save(payload, path)

    target = build_model("resnet18", (3, 32, 32), 2)
    head_before = target.head.weight.clone()
    with caplog.at_level(logging.INFO, logger="debiaslab.models.pretrained"):
        assert load_pretrained(target, path) is target
    assert "head" in caplog.text
    got, want = target.state_dict(), source.state_dict()
    for k in want:
        if not k.startswith("head."):
            assert torch.equal(got[k], want[k]), k
    assert torch.equal(target.head.weight, head_before)

    # same number of classes: the head loads too; the factory option does the same
    same = build_model("resnet18", (3, 32, 32), 10, pretrained=str(path))
    assert torch.equal(same.head.weight, source.head.weight)


def test_load_pretrained_missing_file(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match=r"nope\.pth but no such file; give a local path to an ImageNet ResNet-50"):
        build_model("resnet50", (3, 64, 64), 2, pretrained=str(missing))


def test_load_pretrained_mismatched_keys(tmp_path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(_imagenet_style(build_model("resnet18", (3, 32, 32), 10).state_dict()), path)
    with pytest.raises(ConfigError) as info:
        load_pretrained(build_model("resnet50", (3, 32, 32), 10), path)
    msg = str(info.value)
    assert "do not match ResNet-50" in msg and "missing" in msg and "with another shape" in msg
    assert "\n" not in msg
    # a different stem changes conv1's shape
    with pytest.raises(ConfigError, match=r"conv1\.weight: file \(64, 3, 7, 7\) vs model \(64, 3, 3, 3\)"):
        load_pretrained(build_model("resnet18_cifar", (3, 32, 32), 10), path)
    # extra keys are unexpected
    extra = tmp_path / "extra.pth"
    torch.save({**torch.load(path, weights_only=True), "aux.weight": torch.zeros(1)}, extra)
    with pytest.raises(ConfigError, match=r"1 unexpected \(aux\.weight\)"):
        load_pretrained(build_model("resnet18", (3, 32, 32), 10), extra)
    # non-strict loads what matches
    lenient = load_pretrained(build_model("resnet18", (3, 32, 32), 10), extra, strict_backbone=False)
    assert torch.equal(lenient.conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])


def test_load_pretrained_rejects_non_state_dict(tmp_path) -> None:
    path = tmp_path / "junk.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(ConfigError, match="does not hold a state dict"):
        load_pretrained(build_model("resnet18", (3, 32, 32), 2), path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read pretrained weights"):
        load_pretrained(build_model("resnet18", (3, 32, 32), 2), path)


def test_features_of_flat_inputs() -> None:
    # an MLP also serves vector inputs (e.g. text embeddings)
    model = build_model("mlp", (8,), 3, width=4, depth=1)
    assert model.features(torch.rand(2, 8)).shape == (2, 4)
    assert math.prod((8,)) == model.body[0].in_features


def test_projected_rejects_bad_sizes_with_a_clear_error() -> None:
    from debiaslab.errors import ConfigError
    from debiaslab.models import build_model

    with pytest.raises(ConfigError, match="projected needs dim >= 1"):
        build_model("projected", (8,), 2, dim=0)
    with pytest.raises(ConfigError, match="base cannot itself be 'projected'"):
        build_model("projected", (8,), 2, base="projected")
    model = build_model("projected", (8,), 2, base="mlp", base_kwargs={"width": 4, "depth": 1}, dim=6, hidden=5)
    assert model.feature_dim == 6 and not hasattr(model.base, "head")


def test_published_imagenet_urls_carry_torchvisions_checksums() -> None:
    """torchvision's IMAGENET1K_V1 files (what ``resnet18(pretrained=True)`` loads in the DeNetDM release)."""
    assert IMAGENET_WEIGHTS["ResNet-18"] == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert IMAGENET_WEIGHTS["ResNet-50"] == "https://download.pytorch.org/models/resnet50-0676ba61.pth"


def test_fetch_checks_the_hash_prefix_in_the_file_name_and_downloads_once(tmp_path) -> None:
    served = hash_named_weights({"w": torch.arange(4.0)}, tmp_path / "served", "tiny")
    cache = tmp_path / "cache"
    got = fetch_weights(served.as_uri(), "the tiny weights", cache)
    assert got == cache / served.name and got.read_bytes() == served.read_bytes()
    served.unlink()  # the second call reads the local copy
    assert fetch_weights(served.as_uri(), "the tiny weights", cache) == got

    # a file whose content does not match the prefix its name carries is refused, and nothing is left behind
    liar = tmp_path / "served" / "tiny-00000000.pth"
    torch.save({"w": torch.zeros(1)}, liar)
    with pytest.raises(ConfigError, match=r"cannot fetch the tiny weights from file://.*invalid hash value") as info:
        fetch_weights(liar.as_uri(), "the tiny weights", cache)
    assert "\n" not in str(info.value) and not (cache / liar.name).exists()
    # a local copy that no longer matches its name is named, not loaded
    got.write_bytes(b"changed")
    with pytest.raises(ConfigError, match="does not match the SHA-256 prefix"):
        fetch_weights(served.as_uri(), "the tiny weights", cache)


def test_imagenet_weights_fetched_by_name_map_onto_our_resnet18(tmp_path, monkeypatch) -> None:
    state = torchvision_resnet18_state()
    served = hash_named_weights(state, tmp_path / "served", "resnet18")
    monkeypatch.setitem(IMAGENET_WEIGHTS, "ResNet-18", served.as_uri())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = build_model("resnet18", (3, 32, 32), 10, pretrained="imagenet")
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert model.head.weight.shape == (10, 512)  # the 1000-class head is left out
    assert (tmp_path / "torch" / "hub" / "checkpoints" / served.name).is_file()

    # neither a copy nor the download: one line that says where to put the file
    monkeypatch.setitem(IMAGENET_WEIGHTS, "ResNet-18", (tmp_path / "gone" / "resnet18-f37072fd.pth").as_uri())
    with pytest.raises(ConfigError) as info:
        build_model("resnet18", (3, 32, 32), 10, pretrained="imagenet")
    msg = str(info.value)
    assert msg.startswith("cannot fetch the ImageNet ResNet-18 weights from file://") and "\n" not in msg
    assert "put resnet18-f37072fd.pth in" in msg and "pretrained: /path/to/resnet18-f37072fd.pth" in msg
    with pytest.raises(ConfigError, match="no published ImageNet weights for ResNet-20"):
        load_pretrained(build_model("resnet20", (3, 32, 32), 10), "imagenet")


def test_a_saved_model_rebuilds_without_its_pretrained_weights(tmp_path) -> None:
    """model.pt holds every weight: loading it fetches no ``pretrained`` start again (here: a file long gone)."""
    from debiaslab.engine.checkpoint import load_model_file, save_model_file

    kwargs = {"base": "resnet18", "base_kwargs": {"pretrained": str(tmp_path / "gone.pth")}, "dim": 8}
    model = build_model("projected", (3, 32, 32), 2, base="resnet18", dim=8)
    spec = {"name": "projected", "kwargs": kwargs, "input_shape": [3, 32, 32], "n_classes": 2}
    save_model_file(tmp_path / "model.pt", model, spec)
    loaded, got_spec = load_model_file(tmp_path / "model.pt")
    assert got_spec["kwargs"] == kwargs  # the record keeps where the run started from
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
