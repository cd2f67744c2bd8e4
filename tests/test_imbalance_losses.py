"""Class-imbalance losses, square-root reweighting, CVaR- and χ²-DRO: each loss against a hand computation, the presets
pinned to their sources (SubpopBench hparams_registry.py / algorithms.py, the LDAM-DRW code), the labels they need,
and a fit end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods import get_method
from debiaslab.methods.bsoftmax import log_prior
from debiaslab.methods.chi2_dro import chi2_divergence, chi2_weights
from debiaslab.methods.class_balanced import effective_number_weights
from debiaslab.methods.cvar_dro import cvar_loss, cvar_weights
from debiaslab.methods.focal import focal_from_ce, focal_loss
from debiaslab.methods.hparams import NON_NEGATIVE, POSITIVE, Bounds
from debiaslab.methods.ldam import LDAMHparams, ldam_logits, ldam_margins
from toys import tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = [
    "focal",
    "cb_loss",
    "cb_loss_group",
    "ldam",
    "ldam_drw",
    "bsoftmax",
    "sqrt_reweight_group",
    "sqrt_reweight_class",
    "cvar_dro",
    "chi2_dro",
]


# ---------------------------------------------------------------------------------------------- the losses
def test_focal_loss_is_ce_scaled_by_one_minus_p_to_gamma() -> None:
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    ce = F.cross_entropy(logits, y, reduction="none")
    p = torch.softmax(logits, 1)[:, 0]
    assert torch.allclose(focal_loss(logits, y, 2.0), (1 - p) ** 2 * ce)
    assert torch.allclose(focal_loss(logits, y, 0.0), ce)
    assert torch.equal(focal_from_ce(ce, 2.0), focal_loss(logits, y, 2.0))


def test_focal_loss_gradient_stays_finite_on_a_fitted_example_for_gamma_below_one() -> None:
    # a logit margin of 40 gives p_y = 1 in float32: (1 − p)^γ has an infinite slope there for γ < 1
    logits = torch.tensor([[40.0, 0.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    for gamma in (0.05, 0.5, 0.67, 1.0, 2.0):
        loss = focal_loss(logits, y, gamma).mean()
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and bool(torch.isfinite(grad).all()), gamma
        assert grad[0].abs().max() < 1e-6  # the fitted example pulls on nothing


def test_effective_number_weights_follow_cui_and_sum_to_the_present_units() -> None:
    counts = torch.tensor([100, 10, 0])
    w = effective_number_weights(counts, 0.99)
    raw = torch.tensor([(1 - 0.99) / (1 - 0.99**100), (1 - 0.99) / (1 - 0.99**10)])
    assert torch.allclose(w[:2], (raw / raw.sum() * 2).float()) and w[2] == 0
    assert torch.allclose(effective_number_weights(counts, 0.0), torch.tensor([1.0, 1.0, 0.0]))  # β = 0: plain CE


def test_ldam_margins_scale_with_the_inverse_fourth_root_and_shift_only_the_true_logit() -> None:
    m = ldam_margins(torch.tensor([16, 1]), 0.5)
    assert torch.allclose(m, torch.tensor([0.25, 0.5]))  # 16^(-1/4) = 1/2 of the rarest class's margin
    out = ldam_logits(torch.zeros(2, 2), torch.tensor([0, 1]), m, 30.0)
    assert torch.allclose(out, torch.tensor([[-7.5, 0.0], [0.0, -15.0]]))


def test_ldam_drw_starts_at_four_fifths_of_the_epochs() -> None:
    assert LDAMHparams(epochs=200, drw_start=0.8).drw_epoch() == 160  # cifar_train.py: epoch // 160
    assert LDAMHparams(epochs=200).drw_epoch() is None


def test_balanced_softmax_adds_the_log_prior() -> None:
    assert torch.allclose(log_prior(torch.tensor([90, 10])), torch.log(torch.tensor([0.9, 0.1])))
    prior = log_prior(torch.tensor([90, 10, 0]))  # an empty class counts as one example: finite, below the others
    assert math.isclose(float(prior[0] - prior[1]), math.log(9), rel_tol=1e-5) and float(prior[2]) < float(prior[1])


def test_cvar_weights_put_one_over_alpha_m_on_the_largest_losses() -> None:
    losses = torch.tensor([0.1, 3.0, 2.0, 0.5])
    w = cvar_weights(losses, 0.375)  # α m = 1.5: the largest gets 2/3, the next the remaining 1/3
    assert torch.allclose(w, torch.tensor([0.0, 2 / 3, 1 / 3, 0.0]))
    assert torch.isclose(cvar_loss(losses, 0.375), torch.tensor(3.0 * 2 / 3 + 2.0 / 3))
    assert torch.isclose(cvar_loss(losses, 1.0), losses.mean())  # α = 1 is ERM


def test_chi2_weights_sit_on_the_ball_and_grow_with_the_loss() -> None:
    losses = torch.linspace(0.1, 3.0, 50)
    for rho in (0.1, 1.0):
        p = chi2_weights(losses, rho)
        assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-5) and bool((p >= 0).all())
        assert float(chi2_divergence(p.double())) == pytest.approx(rho, abs=1e-3)
        assert bool((p[1:] >= p[:-1]).all()) and float((p * losses).sum()) > float(losses.mean())
    assert torch.allclose(chi2_weights(torch.full((4,), 2.0), 1.0), torch.full((4,), 0.25))  # equal losses
    assert torch.equal(chi2_weights(torch.tensor([1.0, 3.0]), 1.0), torch.tensor([0.0, 1.0]))  # m <= 1 + 2ρ


# ---------------------------------------------------------------------------------------------- presets
def test_presets_are_subpopbench_and_ldam_drw_defaults_with_their_sources() -> None:
    checks = {
        "focal": ("gamma", 1.0, "hparams_registry.py"),
        "cb_loss": ("beta", 0.9999, "hparams_registry.py"),
        "cb_loss_group": ("beta", 0.9999, "hparams_registry.py"),
        "ldam": ("max_m", 0.5, "hparams_registry.py"),
        "ldam_drw": ("drw_start", 0.8, "cifar_train.py"),
        "bsoftmax": ("tau", 1.0, "algorithms.py"),
        "sqrt_reweight_group": ("power", 0.5, "algorithms.py"),
        "cvar_dro": ("alpha", 0.1, "hparams_registry.py"),
        "chi2_dro": ("rho", 1.0, "mnist_final_cs.yaml"),
    }
    for name, (field, value, source) in checks.items():
        method = get_method(name)()
        assert getattr(method.hparams, field) == value, name
        assert source in method.hparam_sources[field], (name, method.hparam_sources[field])
    assert get_method("ldam")().hparams.scale == 30.0 and get_method("ldam")().hparams.drw_start is None
    assert get_method("ldam_drw")().hparams.drw_beta == 0.9999
    space = get_method("cvar_dro").search_space["alpha"]  # SubpopBench: 10^U(-2, 0)
    assert (space.kind, space.low, space.high) == ("loguniform", 0.01, 1.0)
    assert set(get_method("cb_loss").search_space["beta"].choices) == {0.99, 0.999, 0.9999, 0.99999}
    assert "power" not in get_method("sqrt_reweight_class").search_space


def test_field_bounds_and_choices_name_the_field_and_the_range() -> None:
    assert (NON_NEGATIVE.describe(), POSITIVE.describe()) == (">= 0", "> 0")
    assert Bounds(0.0, 1.0, low_open=True).describe() == "in (0, 1]"
    assert not Bounds(0.0, 1.0, high_open=True).admits(float("nan"))
    with pytest.raises(ConfigError, match=r"^gamma -1.0 must be >= 0 \(0 is plain cross-entropy\)$"):
        get_method("focal")(gamma=-1.0)
    with pytest.raises(ConfigError, match=r"^mix_on 'pixels' unknown; expected one of input, features$"):
        get_method("mixup")(mix_on="pixels")
    # a subclass that changes a default keeps the bounds it declares again
    with pytest.raises(ConfigError, match="anneal_steps -1 must be >= 0"):
        get_method("irm")(anneal_steps=-1)


def test_invalid_settings_are_one_line_errors() -> None:
    for name, hparams, match in (
        ("focal", {"gamma": -1.0}, "gamma"),
        ("cb_loss", {"beta": 1.0}, "beta"),
        ("ldam", {"drw_start": 1.5}, "drw_start"),
        ("bsoftmax", {"tau": -1.0}, "tau"),
        ("cvar_dro", {"alpha": 0.0}, "alpha"),
    ):
        with pytest.raises(ConfigError, match=match):
            get_method(name)(**hparams)


# ---------------------------------------------------------------------------------------------- fits
def test_group_versions_need_training_attributes_class_versions_do_not() -> None:
    train, val = toy_splits(128, 64, 0.1, n_features=6, attrs=False)
    with pytest.raises(MissingLabelsError, match="cb_loss_group"):
        get_method("cb_loss_group")(**tiny_mlp(8), epochs=1).fit(train, val, trainer=Trainer(progress=False))
    for name in ("cb_loss", "ldam_drw", "bsoftmax", "sqrt_reweight_class", "focal", "cvar_dro"):
        fitted = get_method(name)(**tiny_mlp(8), epochs=1, selection="val_worst_class").fit(train, val)
        assert fitted.fit_result_.stages[0].name == name


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_fits_end_to_end_and_deploys_its_stage(name: str) -> None:
    train, val = toy_splits(128, 64, 0.1, n_features=6)
    trainer = Trainer(progress=False, seed=0)
    fitted = get_method(name)(**tiny_mlp(8), epochs=2).fit(train, val, trainer=trainer)
    assert math.isfinite(fitted.fit_result_.history[-1]["train_loss"])
    assert fitted.trains_without_rule and fitted.model_ is trainer.last_stage.modules


def test_drw_changes_the_loss_only_from_its_epoch() -> None:
    train, val = toy_splits(128, 64, 0.1, n_features=6)
    plain = get_method("ldam")(**tiny_mlp(8), epochs=3).fit(train, val, trainer=Trainer(progress=False, seed=0))
    drw = get_method("ldam")(**tiny_mlp(8), epochs=3, drw_start=2 / 3)  # the same stage name, so the same start
    drw.fit(train, val, trainer=Trainer(progress=False, seed=0))
    losses = [[line["train_loss"] for line in m.fit_result_.history] for m in (plain, drw)]
    assert losses[0][:2] == losses[1][:2] and losses[0][2] != losses[1][2]
    assert drw.fit_result_.extras["drw_epoch"] == 2
