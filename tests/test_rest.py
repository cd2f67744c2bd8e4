"""REST: the upweighting sampler, the release's hard-coded λ_up and the README's per-ratio option, label
requirements, the label-free variant, sparse training with cost in the result, resume, hyperparameter table, and one CLI
run on Colored MNIST."""

from __future__ import annotations

import json

import pytest
import torch

from debiaslab.cli.main import main
from debiaslab.data.core import GroupDataset
from debiaslab.engine.sampling import WeightedSampler
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods import get_method
from debiaslab.methods.rest import REST, RESTFree, lambda_for_ratio, rest_sampler, upweight_probabilities
from toys import NoTrainingTrainer, RecordingTrainer, assert_same_run, full_and_resumed, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits()


def rest(**kw) -> REST:
    return REST(**{**tiny_mlp(), "epochs": 2, "lambda_up": 20, "density": 0.3, "sparse_update_every": 4, **kw})


def exact_ratio_split(n: int, n_conflicting: int) -> GroupDataset:
    y = torch.arange(n) % 2
    attr = y.clone()
    attr[:n_conflicting] = 1 - attr[:n_conflicting]
    return GroupDataset(x=torch.randn(n, 8), y=y, attr=attr, n_classes=2, n_attrs=2, name="toy", split="train")


def test_registered_with_their_label_requirements() -> None:
    assert get_method("rest") is REST and get_method("rest_free") is RESTFree
    assert REST.requires.train_attrs and not REST.requires.val_attrs
    assert not RESTFree.requires.train_attrs and not RESTFree.requires.val_attrs


def test_sampler_draws_conflicting_examples_lambda_times_as_often() -> None:
    conflicting = torch.tensor([True, False, False, True, False])
    p = upweight_probabilities(conflicting, 10.0)
    assert torch.allclose(p, torch.tensor([10.0, 1, 1, 10, 1], dtype=torch.float64) / 23)
    sampler = rest_sampler(conflicting, 10.0)
    assert isinstance(sampler, WeightedSampler) and len(sampler) == 5 and sampler.replacement
    draws = torch.cat([sampler.epoch_indices(e, torch.Generator().manual_seed(e)) for e in range(4000)])
    share = float(torch.isin(draws, torch.tensor([0, 3])).double().mean())
    assert share == pytest.approx(20 / 23, abs=0.01)


def test_lambda_up_default_80_is_hard_coded_in_rest_release_data_dro_dataset_get_loader() -> None:
    """REST release (github.com/zhao1402072392/REST), data/dro_dataset.py get_loader: group 0 (conflicting) weighs
    80, the rest 1, whatever --lambda_upweight says (run_expt.py parses that flag and never reads it)."""
    for dataset in (None, "colored_mnist", "corrupted_cifar10", "bffhq"):
        method = REST(dataset=dataset)
        assert method.hparams.lambda_up == 80.0 and "dro_dataset.py" in method.hparam_sources["lambda_up"]
        assert method.resolve_lambda(exact_ratio_split(1000, 5))[0] == 80.0  # also at 0.5 %


def test_lambda_up_by_ratio_follows_the_release_readme_table() -> None:
    assert [lambda_for_ratio(r) for r in (0.005, 0.0102, 0.02, 0.0495)] == [10.0, 30.0, 50.0, 80.0]
    assert lambda_for_ratio(0.03) is None and lambda_for_ratio(0.1) is None
    method = REST(dataset="colored_mnist", lambda_up="by_ratio")
    lam, source = method.resolve_lambda(exact_ratio_split(2000, 40))  # 2 %
    assert lam == 50.0 and "README" in source
    assert REST(dataset="corrupted_cifar10", lambda_up="by_ratio").resolve_lambda(exact_ratio_split(1000, 5))[0] == 10
    assert REST(dataset="colored_mnist", lambda_up=7).resolve_lambda(exact_ratio_split(2000, 40)) == (7.0, "user")
    for bad in (0, -1.0, "ratio", True):
        with pytest.raises(ConfigError, match="lambda_up"):
            REST(lambda_up=bad)


def test_missing_lambda_up_fails_before_training(toy) -> None:
    train, val = toy
    with pytest.raises(ConfigError, match="lambda_up=by_ratio has no value for toyset"):
        REST(dataset="toyset", lambda_up="by_ratio", **tiny_mlp()).fit(train, val, trainer=NoTrainingTrainer())
    with pytest.raises(ConfigError, match=r"conflicting ratio 0\.0300"):
        REST(dataset="colored_mnist", lambda_up="by_ratio").resolve_lambda(exact_ratio_split(1000, 30))


def test_rest_needs_training_attributes(toy) -> None:
    _, val = toy
    unlabelled = toy_splits(attrs=False)[0]
    with pytest.raises(MissingLabelsError, match="rest"):
        rest().fit(unlabelled, val, trainer=NoTrainingTrainer())


def test_rest_trains_sparse_on_the_upweighting_sampler_and_reports_cost(toy) -> None:
    train, val = toy
    trainer = RecordingTrainer()
    method = rest(epochs=3).fit(train, val, trainer=trainer)
    result = method.fit_result_
    assert [s.name for s in result.stages] == ["rest"]
    stage = trainer.stages["rest"]
    conflicting = ~train.is_aligned
    assert torch.allclose(stage.sampler.weights, upweight_probabilities(conflicting, 20.0))
    assert stage.sparsity is not None and stage.sparsity.density == 0.3
    extras = result.extras
    assert extras["lambda_up"] == 20.0 and extras["n_upweighted"] == int(conflicting.sum())
    assert extras["conflicting_from"] == "attributes"
    cost = extras["cost"]
    n = cost["weights_maskable"]
    assert cost["weights_nonzero"] <= round(0.3 * n) and cost["inference_macs_sparse"] < cost["inference_macs_dense"]
    (counted,) = cost["train_stages"]
    assert counted["examples"] == 3 * len(train) and counted["steps"] == 3 * 8 and counted["updates"] == 5
    assert 0.3 <= cost["train_macs_ratio"] < 0.5
    weights = [m.weight for m in method.model_.modules() if isinstance(m, torch.nn.Linear)]
    assert sum(int((w != 0).sum()) for w in weights) == cost["weights_nonzero"]


def test_dense_rest_counts_its_training_cost_from_the_sampler(toy) -> None:
    train, val = toy
    result = rest(density=1.0, epochs=1).fit(train, val).fit_result_
    cost = result.extras["cost"]
    assert cost["weights_density"] == 1.0 and cost["train_macs_ratio"] == 1.0
    assert cost["train_stages"][0]["examples"] == len(train)
    assert not any(k.startswith("sparse") for k in result.history[0])


def test_label_free_variant_upweights_an_erm_error_set(toy) -> None:
    _, val = toy
    unlabelled = toy_splits(attrs=False)[0]
    trainer = RecordingTrainer()
    method = RESTFree(**{**tiny_mlp(), "epochs": 1, "identify_epochs": 2, "lambda_up": 5, "density": 0.5})
    result = method.fit(unlabelled, val, trainer=trainer).fit_result_
    assert trainer.epochs_run == {"identify": 2, "rest": 1}
    assert [s.name for s in result.stages] == ["identify", "rest"]
    identify = trainer.stages["identify"]
    with torch.no_grad():
        identify.modules.eval()
        wrong = identify.predict_fn(unlabelled.x).argmax(1) != unlabelled.y
    assert result.extras["conflicting_from"] == "error_set" and result.extras["n_upweighted"] == int(wrong.sum())
    assert torch.allclose(trainer.stages["rest"].sampler.weights, upweight_probabilities(wrong, 5.0))
    assert [s["stage"] for s in result.extras["cost"]["train_stages"]] == ["identify", "rest"]


def test_resumed_rest_equals_uninterrupted(toy, tmp_path) -> None:
    train, val = toy
    full, resumed = full_and_resumed(lambda: rest(epochs=3), train, val, tmp_path, epoch=1, seed=2)
    assert_same_run(full, resumed)
    assert repr(full.fit_result_.extras) == repr(resumed.fit_result_.extras)


def test_colored_mnist_defaults_follow_the_release() -> None:
    method = REST(dataset="colored_mnist")
    hp = method.hparams
    assert (hp.model, hp.optimizer, hp.momentum, hp.lr, hp.batch_size, hp.epochs) == (
        "cnn_rest",
        "sgd",
        0.9,
        0.01,
        256,
        100,
    )
    assert (hp.scheduler, hp.lr_patience, hp.lr_gamma, hp.weight_decay) == ("plateau", 5, 0.1, 0.0)
    assert (hp.sparse_init, hp.sparse_update_every, hp.sparse_drop_fraction) == ("erk", 1000, 0.5)
    assert hp.lambda_up == 80.0 and 0 < hp.density < 1
    assert "REST release" in method.hparam_sources["model"] and "dro_dataset.py" in method.hparam_sources["lambda_up"]


def test_cli_run_on_colored_mnist_writes_cost_to_final_json(tmp_path, cache_dir) -> None:
    out = tmp_path / "rest"
    code = main(
        ["train", "--method", "rest", "--dataset", "colored_mnist", "--ratio", "0.05", "--epochs", "1",
         "--hp", "model=mlp", "--hp", "model_kwargs={width: 32, depth: 1}", "--batch-size", "512",
         "--hp", "density=0.1", "--hp", "sparse_update_every=20",
         "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    final = json.loads((out / "final.json").read_text())
    extras = final["extras"]
    assert extras["lambda_up"] == 80.0 and "dro_dataset.py" in extras["lambda_up_source"]
    cost = extras["cost"]
    assert cost["weights_nonzero"] == round(0.1 * cost["weights_maskable"])
    assert cost["train_stages"][0]["updates"] == cost["train_stages"][0]["steps"] // 20
    assert cost["checkpoint_bytes_sparse"] < cost["checkpoint_bytes_dense"]
    model = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert sum(int((v != 0).sum()) for k, v in model.items() if k.endswith("weight")) == cost["weights_nonzero"]
