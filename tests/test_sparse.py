"""Sparse training: what is masked, ERK/uniform densities, exact counts, masked steps (momentum SGD, Adam), drop and
regrow by magnitude and dense gradient, ζ schedule, checkpoints and resume, sparse storage and MAC counting."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from debiaslab.engine.checkpoint import load_checkpoint, save_checkpoint
from debiaslab.engine.cost import checkpoint_sizes, inference_cost, layer_macs, training_macs
from debiaslab.engine.sparse import (
    SparseConfig,
    SparseTraining,
    erk_densities,
    layer_counts,
    maskable_weights,
    uniform_densities,
)
from debiaslab.engine.sparse_io import pack_bits, pack_state_dict, pack_tensor, unpack_bits, unpack_state_dict
from debiaslab.errors import ConfigError, DataError
from debiaslab.methods import get_method
from debiaslab.models import build_model
from toys import assert_same_run, full_and_resumed, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    return toy_splits()


def mlp3() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))


def active(sp: SparseTraining) -> dict[str, int]:
    return {k: int(m.sum()) for k, m in sp.masks.items()}


# ---------------------------------------------------------------------------------------------- what is masked
def test_only_linear_and_conv_weights_that_train_are_masked() -> None:
    model = nn.ModuleDict(
        {
            "conv": nn.Conv2d(3, 4, 3),
            "bn": nn.BatchNorm2d(4),
            "emb": nn.Embedding(5, 4),
            "fc": nn.Linear(4, 2),
            "frozen": nn.Linear(4, 4),
            "ln": nn.LayerNorm(4),
        }
    )
    model["frozen"].weight.requires_grad_(False)
    model.register_parameter("table", nn.Parameter(torch.zeros(7, 3)))  # e.g. BAM's auxiliary logits
    assert list(maskable_weights(model)) == ["conv.weight", "fc.weight"]
    assert list(maskable_weights(model, trainable=[model["fc"].weight])) == ["fc.weight"]


# ---------------------------------------------------------------------------------------------- densities
def test_erk_favours_small_layers_and_totals_the_global_density() -> None:
    for density in (0.0005, 0.05, 0.5):
        sp = SparseTraining(build_model("cnn_rest", (3, 28, 28), 10), SparseConfig(density=density), seed=0)
        d = {s["name"]: s["density"] for s in sp.layer_stats()}
        convs = [d[f"blocks.{i}.conv.weight"] for i in range(3)]
        assert convs[0] > convs[1] > convs[2] and d["head.weight"] > convs[2]
        n = sp.n_maskable
        assert sp.n_active == round(density * n)  # exact, not only in expectation
        assert all(1 <= a <= m.numel() for a, m in zip(active(sp).values(), sp.masks.values(), strict=True))
        assert all(torch.equal(w != 0, sp.masks[k]) for k, w in sp.weights.items())  # init weights are non-zero


def test_erk_is_proportional_to_sum_over_product_and_caps_layers_at_one() -> None:
    shapes = {"tiny": (4, 2), "mid": (50, 100), "big": (100, 100)}
    d = erk_densities(shapes, 0.5)
    assert d["tiny"] == 1.0  # ε·(6/8) would exceed 1
    assert d["mid"] / d["big"] == pytest.approx((150 / 5000) / (200 / 10000))
    total = sum(d[k] * math.prod(s) for k, s in shapes.items())
    assert total == pytest.approx(0.5 * sum(math.prod(s) for s in shapes.values()))
    assert erk_densities(shapes, 1.0) == {k: 1.0 for k in shapes}
    u = uniform_densities(shapes, 0.3)
    counts = layer_counts({k: math.prod(s) for k, s in shapes.items()}, u, 0.3)
    assert sum(counts.values()) == round(0.3 * 15008) and counts["big"] == 3000


def test_masks_come_from_the_seed() -> None:
    cfg = SparseConfig(density=0.3)
    a, b, c = (SparseTraining(mlp3(), cfg, seed=s).masks for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"density": 0.0}, "density 0.0"),
        ({"density": 1.5}, "density 1.5"),
        ({"init": "snip"}, "sparse_init 'snip'"),
        ({"update_every": 0}, "sparse_update_every 0"),
        ({"end_fraction": 1.2}, "sparse_end_fraction 1.2"),
    ],
)
def test_bad_options_are_clear_errors(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SparseConfig(**kw)


def test_model_without_maskable_weights_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no Linear or Conv weight"):
        SparseTraining(nn.BatchNorm1d(3), SparseConfig(density=0.5))


def test_drop_fraction_is_a_cosine_and_updates_stop_at_the_end_fraction() -> None:
    cfg = SparseConfig(density=0.1, update_every=10, end_fraction=0.75)
    assert cfg.drop_fraction_at(0, 100) == pytest.approx(0.5)
    assert cfg.drop_fraction_at(75, 100) == pytest.approx(0.005)
    assert cfg.drop_fraction_at(37.5, 100) == pytest.approx((0.5 + 0.005) / 2)
    assert [t for t in range(1, 101) if cfg.is_update_step(t, 100)] == [10, 20, 30, 40, 50, 60, 70]
    assert not any(SparseConfig(density=0.1, update_every=10, static=True).is_update_step(t, 100) for t in range(101))


# ---------------------------------------------------------------------------------------------- steps and updates
def test_update_drops_smallest_and_regrows_largest_dense_gradient_at_zero() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 3, bias=False)
    cfg = SparseConfig(density=0.5, init="uniform", update_every=1, drop_fraction=0.5, drop_fraction_min=0.5)
    sp = SparseTraining(layer, cfg, seed=3)
    mask0 = sp.masks["weight"].clone().reshape(-1)
    on, off = mask0.nonzero().flatten().tolist(), (~mask0).nonzero().flatten().tolist()
    assert len(on) == len(off) == 6
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, 13.0).reshape(3, 4) * mask0.reshape(3, 4))
    grad = torch.rand(12) + 0.1
    grad[on] += 10.0  # the largest dense gradients sit on active weights: they must not count for regrowth
    layer.weight.grad = grad.reshape(3, 4).clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0, momentum=0.9)
    sp.before_step(1, 100)
    assert torch.equal(layer.weight.grad.reshape(-1), grad * mask0)  # the optimiser sees masked gradients
    optimizer.step()
    sp.after_step(1, 100, optimizer, batch_size=8)
    k = math.ceil(0.5 * 6)
    dropped = sorted(on)[:k]  # |w| = index + 1
    grown = sorted(off, key=lambda i: -float(grad[i]))[:k]
    mask1 = sp.masks["weight"].reshape(-1)
    expected = mask0.clone()
    expected[dropped], expected[grown] = False, True
    assert torch.equal(mask1, expected) and int(mask1.sum()) == 6
    w = layer.weight.detach().reshape(-1)
    assert bool((w[grown] == 0).all()) and bool((w[~mask1] == 0).all())
    buf = optimizer.state[layer.weight]["momentum_buffer"].reshape(-1)
    assert bool((buf[dropped] == 0).all()) and bool((buf[grown] == 0).all())
    kept = [i for i in on if i not in dropped]
    assert torch.equal(buf[kept], grad[kept])
    assert (sp.updates, sp.regrown, sp.steps, sp.examples, sp.update_examples) == (1, 3, 1, 8, 8)


def test_a_weight_just_dropped_is_not_regrown_in_the_same_update() -> None:
    layer = nn.Linear(2, 2, bias=False)
    cfg = SparseConfig(density=0.75, init="uniform", update_every=1, drop_fraction=0.5, drop_fraction_min=0.5)
    sp = SparseTraining(layer, cfg, seed=0)
    mask0 = sp.masks["weight"].clone().reshape(-1)
    layer.weight.grad = torch.where(mask0, 100.0, 1.0).reshape(2, 2)  # dropped positions have the largest gradient
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)
    sp.before_step(1, 10)
    optimizer.step()
    sp.after_step(1, 10, optimizer, 1)
    mask1 = sp.masks["weight"].reshape(-1)
    assert int(mask1.sum()) == 3 and bool(mask1[~mask0].all())  # k = min(⌈0.5·3⌉, 1 inactive) = 1 swapped


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    ],
    ids=["sgd-momentum", "nesterov", "adam", "adamw"],
)
def test_inactive_weights_and_their_optimiser_state_stay_zero(make) -> None:
    model = mlp3()
    sp = SparseTraining(model, SparseConfig(density=0.3, update_every=3, drop_fraction=0.5), seed=0)
    counts = active(sp)
    optimizer = make(model.parameters())
    g = torch.Generator().manual_seed(0)
    masks_seen = [{k: m.clone() for k, m in sp.masks.items()}]
    for step in range(1, 13):
        x, y = torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        sp.before_step(step, 12)
        optimizer.step()
        sp.after_step(step, 12, optimizer, 16)
        assert active(sp) == counts  # per-layer counts conserved through every update
        assert sp.n_active == round(0.3 * sp.n_maskable)
        for k, w in sp.weights.items():
            off = ~sp.masks[k]
            assert bool((w[off] == 0).all()), (step, k)
            for name, state in optimizer.state[w].items():
                if isinstance(state, torch.Tensor) and state.shape == w.shape:
                    assert bool((state[off] == 0).all()), (step, k, name)
        masks_seen.append({k: m.clone() for k, m in sp.masks.items()})
    assert sp.updates == 3  # steps 3, 6, 9 (not 12: updates stop before the end of training)
    changed = [any(not torch.equal(a[k], b[k]) for k in a) for a, b in itertools.pairwise(masks_seen)]
    assert [i + 1 for i, c in enumerate(changed) if c] == [3, 6, 9]


def test_static_masks_never_change() -> None:
    model = mlp3()
    sp = SparseTraining(model, SparseConfig(density=0.3, update_every=1, static=True), seed=0)
    before = {k: m.clone() for k, m in sp.masks.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(1, 6):
        optimizer.zero_grad()
        model(torch.randn(8, 12)).sum().backward()
        sp.before_step(step, 5)
        optimizer.step()
        sp.after_step(step, 5, optimizer, 8)
    assert sp.updates == 0 and all(torch.equal(before[k], sp.masks[k]) for k in before)


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_restores_masks_and_counters(tmp_path) -> None:
    model = mlp3()
    sp = SparseTraining(model, SparseConfig(density=0.2), seed=5)
    sp.updates, sp.regrown, sp.steps, sp.examples, sp.update_examples = 4, 17, 40, 640, 64
    save_checkpoint(tmp_path / "s.pt", {"sparse": sp.state_dict()})
    other = SparseTraining(mlp3(), SparseConfig(density=0.2), seed=6)  # different masks at first
    assert not all(torch.equal(sp.masks[k], other.masks[k]) for k in sp.masks)
    other.load_state_dict(load_checkpoint(tmp_path / "s.pt")["sparse"])
    assert all(torch.equal(sp.masks[k], other.masks[k]) for k in sp.masks)
    assert other.state_dict()["regrown"] == 17 and other.log_values() == sp.log_values()
    assert all(bool((w[~other.masks[k]] == 0).all()) for k, w in other.weights.items())
    with pytest.raises(DataError, match="sparse masks cover layers"):
        SparseTraining(nn.Linear(3, 3), SparseConfig(density=0.5)).load_state_dict(sp.state_dict())


def test_sparse_erm_resumed_after_interruption_equals_uninterrupted(toy, tmp_path) -> None:
    train, val = toy

    def make():
        return get_method("erm")(**tiny_mlp(lr=0.05), epochs=3, density=0.3, sparse_update_every=3, optimizer="sgd")

    full, resumed = full_and_resumed(make, train, val, tmp_path, epoch=2, seed=4, between=check_last_checkpoint)
    assert_same_run(full, resumed)
    last = full.fit_result_.history[-1]
    assert last["sparse_updates"] == 7 and last["sparse_density"] == pytest.approx(round(0.3 * 160) / 160)
    assert "cost" in full.fit_result_.extras  # any method trained sparse reports its cost


def check_last_checkpoint(run_dir) -> None:
    state = load_checkpoint(run_dir / "checkpoints" / "erm.last.pt")
    assert state["epoch"] == 2 and state["sparse"]["updates"] == 5  # steps 3..15 of 16
    weights = state["modules"]
    for name, mask in state["sparse"]["masks"].items():
        assert bool((weights[name][~mask] == 0).all())


def test_dense_training_is_untouched(toy) -> None:
    train, val = toy
    method = get_method("erm")(**tiny_mlp(), epochs=1).fit(train, val)
    assert method.hparams.sparse_config() is None
    assert not any(k.startswith("sparse") for k in method.fit_result_.history[0])
    assert "cost" not in method.fit_result_.extras


# ---------------------------------------------------------------------------------------------- cost and storage
def test_macs_of_a_tiny_conv_net_match_hand_counts() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, groups=2),  # 4x4x4 outputs x (1 x 9) = 576
        nn.ReLU(),
        nn.Conv2d(4, 4, 2, stride=2, bias=False),  # 4x2x2 outputs x (4 x 4) = 256
        nn.Flatten(),
        nn.Linear(16, 5),  # 16 x 5 = 80
    )
    assert layer_macs(model, (2, 4, 4)) == {"0": 576, "2": 256, "4": 80}
    with torch.no_grad():
        model[2].weight.view(-1)[:32] = 0.0  # half of conv 2's 64 weights
        model[4].weight.view(-1)[:10] = 0.0  # 10 of the 80 weights
    cost = inference_cost(model, (2, 4, 4))
    assert (cost["inference_macs_dense"], cost["inference_macs_sparse"]) == (912, 576 + 128 + 70)
    assert cost["weights_maskable"] == 36 + 64 + 80 and cost["weights_nonzero"] == 36 + 32 + 70
    assert cost["params_total"] == 180 + 4 + 5 and cost["params_nonzero"] == 138 + 4 + 5
    assert [layer["density"] for layer in cost["layers"]] == [1.0, 0.5, 0.875]
    transposed = nn.ConvTranspose2d(1, 2, 2, stride=2)  # each of 9 inputs meets 2 x 4 weights
    assert layer_macs(transposed, (1, 3, 3)) == {"": 72}
    assert model.training  # left in the mode it was in


def test_cnn_rest_is_the_release_cnn_and_its_macs() -> None:
    model = build_model("cnn_rest", (3, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 64, (4, 4), (2, 2), (1, 1)),
        (64, 128, (4, 4), (2, 2), (1, 1)),
        (128, 256, (4, 4), (2, 2), (1, 1)),
    ]
    assert all(c.bias is None for c in convs) and sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    assert model.head.in_features == 256
    # 28 -> 14 -> 7 -> 3: 64·196·48 + 128·49·1024 + 256·9·2048 + 256·10
    assert sum(layer_macs(model, (3, 28, 28)).values()) == 602_112 + 6_422_528 + 4_718_592 + 2_560


def test_training_macs_add_the_dense_gradient_at_update_steps() -> None:
    assert training_macs(100, 10, examples=50, update_examples=5) == {
        "train_macs_sparse": 3 * 10 * 50 + 90 * 5,
        "train_macs_dense": 3 * 100 * 50,
    }


def test_sparse_storage_round_trips_and_is_measured_smaller() -> None:
    torch.manual_seed(0)
    state = {
        "sparse": torch.randn(64, 300) * (torch.rand(64, 300) < 0.02),  # indices win
        "half": torch.randn(40, 40) * (torch.rand(40, 40) < 0.5),  # bitmap wins
        "dense": torch.randn(5, 7),
        "bias": torch.randn(7),
        "count": torch.tensor(3),
    }
    packed = pack_state_dict(state)
    assert [packed["sparse"][k]["format"] for k in ("sparse", "half", "dense")] == ["indices", "bitmap", "dense"]
    back = unpack_state_dict(packed)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert pack_tensor(torch.zeros(3, 3))["values"].numel() == 0
    mask = torch.rand(13) < 0.5
    assert torch.equal(unpack_bits(pack_bits(mask), 13), mask) and pack_bits(mask).numel() == 2
    layer = nn.Linear(300, 200)
    SparseTraining(layer, SparseConfig(density=0.05), seed=0)
    sizes = checkpoint_sizes(layer)
    assert sizes["checkpoint_bytes_sparse"] < 0.2 * sizes["checkpoint_bytes_dense"]
