"""Dataset presets pinned to the papers' and official releases' settings (each test names its source), plus the
plateau scheduler's direction, DFR's refusal of the paper protocol, DeTT's feature-map projector and what
``debiaslab methods`` says about presets and labels."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from debiaslab.cli.main import main
from debiaslab.data.core import GroupDataset
from debiaslab.engine.optim import OptimConfig, build_scheduler
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods import get_method
from debiaslab.methods.catalog import TRAINING_LABELS, grouped, label_needs, method_card, training_labels
from debiaslab.methods.dett import DeTT, map_mse
from debiaslab.methods.dfr import DFR, DFRClass
from debiaslab.methods.families import FAMILIES
from debiaslab.methods.registry import list_methods
from debiaslab.models import build_model
from debiaslab.models.pretrained import IMAGENET_WEIGHTS
from toys import RecordingTrainer, hash_named_weights, make_split, torchvision_resnet18_state, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")


def conv_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


# ------------------------------------------------------------------------------------------------ DeNetDM
def test_denetdm_bffhq_matches_release_config_py_and_model_py() -> None:
    """DeNetDM release (github.com/kadarsh22/DeNetDM): config.py named config ``bffhq`` and module/model.py
    ``BFFHQDeNetDModel``."""
    method = get_method("denetdm")(dataset="bffhq")
    hp = method.hparams
    assert (hp.expert_epochs, hp.expert_lr, hp.expert_weight_decay) == (10, 1e-3, 0.0)  # num_epochs, main_*
    assert (hp.epochs, hp.lr, hp.weight_decay, hp.batch_size) == (100, 1e-4, 0.0, 64)  # stage2_*
    assert hp.distill_weight == 0.0 and "config.py" in method.hparam_sources["expert_epochs"]
    assert hp.shallow_kwargs == {"channels": [64, 128, 512, 512], "kernel_size": [7, 3, 3, 3], "padding": 0}
    shallow = build_model(hp.shallow_model, (3, 224, 224), 2, **hp.shallow_kwargs)
    deep = build_model(hp.deep_model, (3, 224, 224), 2, **hp.deep_kwargs)
    convs = [m for m in shallow.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [
        (3, 64, 7, 0),
        (64, 128, 3, 0),
        (128, 512, 3, 0),
        (512, 512, 3, 0),
    ]
    # about 3 M conv weights (3*64*49 + 64*128*9 + 128*512*9 + 512*512*9), smaller than the ResNet-18 deep branch
    assert conv_weights(shallow) == 3_032_256
    assert conv_weights(shallow) < conv_weights(deep) / 3
    assert shallow.feature_dim == deep.feature_dim == 512


def test_denetdm_corrupted_cifar10_stage1_weight_decay_from_release_config_py() -> None:
    """DeNetDM release config.py named config ``corrupted_cifar10``: main_weight_decay 1e-3, stage 2 0."""
    method = get_method("denetdm")(dataset="corrupted_cifar10")
    assert (method.hparams.expert_weight_decay, method.hparams.weight_decay) == (1e-3, 0.0)
    assert "config.py" in method.hparam_sources["expert_weight_decay"]


@pytest.fixture
def served_imagenet_resnet18(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """A stand-in for torchvision's ImageNet ResNet-18 behind a file:// URL (named with its own checksum), and an
    empty torch hub folder: the presets' ``pretrained: imagenet`` fetches it as it would the published file."""
    state = torchvision_resnet18_state(seed=3)
    served = hash_named_weights(state, tmp_path / "served", "resnet18")
    monkeypatch.setitem(IMAGENET_WEIGHTS, "ResNet-18", served.as_uri())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return state


@pytest.mark.parametrize("dataset", ["corrupted_cifar10", "bffhq"])
def test_denetdm_stage2_target_starts_from_imagenet_resnet18_as_in_release_model_py(
    dataset, served_imagenet_resnet18, tmp_path, monkeypatch, capsys
) -> None:
    """DeNetDM release module/model.py: stage 2's target (``debias_branch``) is torchvision's
    ``resnet18(pretrained=True)`` with fc removed, followed by ``nn.Linear(512, 64)`` in CCIFARDeNetDMModel and used
    as it is in BFFHQDeNetDModel; the deep branch is not pretrained."""
    method = get_method("denetdm")(dataset=dataset)
    hp = method.hparams
    assert "module/model.py" in method.hparam_sources["model"] and "pretrained" in method.hparam_sources["model"]
    target = build_model(hp.model, (3, 32, 32), 10, **hp.model_kwargs)
    if dataset == "corrupted_cifar10":
        assert (hp.model, hp.model_kwargs) == (
            "projected",
            {"base": "resnet18", "base_kwargs": {"pretrained": "imagenet"}, "dim": 64},
        )
        backbone = target.base
        assert isinstance(target.projector, nn.Linear) and target.projector.weight.shape == (64, 512)
    else:
        assert (hp.model, hp.model_kwargs) == ("resnet18", {"pretrained": "imagenet"})
        backbone = target
    assert backbone.conv1.weight.shape == (64, 3, 7, 7)  # torchvision's ImageNet stem
    got = backbone.state_dict()
    assert all(torch.equal(got[k], v) for k, v in served_imagenet_resnet18.items() if not k.startswith("fc."))
    assert "pretrained" not in hp.deep_kwargs
    assert main(["methods", "denetdm", "--format", "json"]) == 0  # what `debiaslab methods denetdm` shows
    shown = json.loads(capsys.readouterr().out)["presets"][dataset]["model_kwargs"]
    assert "imagenet" in json.dumps(shown["value"]) and "module/model.py" in shown["source"]
    train = make_split(8, 0, "train", 0.5, n_features=3 * 32 * 32, shape=(3, 32, 32))
    method.check_model(train)  # the fetched copy passes the check before a run

    # without the file and without the network, checking the run fails first, in one line
    monkeypatch.setitem(IMAGENET_WEIGHTS, "ResNet-18", (tmp_path / "gone" / "resnet18-f37072fd.pth").as_uri())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"^cannot fetch the ImageNet ResNet-18 weights [^\n]*$"):
        method.check_model(train)


def test_conv_net_per_block_kernel_sizes_are_checked() -> None:
    with pytest.raises(ConfigError, match="kernel_size must be a positive int or a list of 4"):
        build_model("cnn4", (3, 64, 64), 2, kernel_size=[7, 3, 3])


# ------------------------------------------------------------------------------------------------ JTT / GroupDRO
@pytest.mark.parametrize(
    ("dataset", "expected"),
    [("waterbirds", (1e-5, 1.0, 300, 64)), ("celeba", (1e-5, 0.1, 50, 64))],
)
def test_jtt_waterbirds_celeba_lr_and_weight_decay_from_jtt_official_readme(dataset, expected) -> None:
    """JTT official README (github.com/anniesch/jtt): ERM and JTT at lr 1e-5 with weight decay 1.0 (Waterbirds,
    300 epochs) / 0.1 (CelebA, 50 epochs), batch 64 (generate_downstream.py); not the ERM preset."""
    method = get_method("jtt")(dataset=dataset)
    hp = method.hparams
    assert (hp.lr, hp.weight_decay, hp.epochs, hp.batch_size) == expected
    assert hp.identify_lr is None and hp.identify_weight_decay is None  # identification uses the same settings
    assert "anniesch/jtt" in method.hparam_sources["weight_decay"]


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [("waterbirds", (1e-5, 1.0, 300, 128)), ("celeba", (1e-5, 0.1, 50, 128))],
)
def test_groupdro_waterbirds_celeba_strong_l2_from_groupdro_paper(dataset, expected) -> None:
    """GroupDRO paper (Sagawa et al. 2020): the strong-L2 group DRO models, lr 1e-5 with weight decay 1.0
    (Waterbirds) / 0.1 (CelebA); not the ERM preset's 1e-3 / 1e-4."""
    method = get_method("groupdro")(dataset=dataset)
    hp = method.hparams
    assert (hp.lr, hp.weight_decay, hp.epochs, hp.batch_size) == expected
    assert method.hparam_sources["weight_decay"].startswith("GroupDRO paper")
    assert get_method("erm")(dataset=dataset).hparams.weight_decay == 1e-4  # ERM keeps the standard preset


# ------------------------------------------------------------------------------------------------ DFR
def test_dfr_refuses_the_paper_protocol_which_would_fit_on_test() -> None:
    train, val = toy_splits(64, 32)
    test = make_split(32, 9, "test", 0.5)
    for method in (DFR(), DFRClass()):
        with pytest.raises(ConfigError, match=r"toy/test here \(--protocol paper\): it would train on the test set"):
            method.check_labels(train, test)
        method.check_labels(train, val)  # the validation split is fine


# ------------------------------------------------------------------------------------------------ scheduler
def test_plateau_scheduler_minimises_a_minimised_selection_score() -> None:
    param = nn.Parameter(torch.zeros(1))

    def lr_after(scores: list[float], mode: str) -> float:
        opt = torch.optim.SGD([param], lr=1.0)
        sched = build_scheduler(opt, OptimConfig(scheduler="plateau", plateau_patience=1, gamma=0.1), 5, mode)
        for s in scores:
            sched.step(s)
        return opt.param_groups[0]["lr"]

    falling = [0.5, 0.4, 0.3, 0.2]  # ClassDiff improving every epoch
    assert lr_after(falling, "min") == 1.0
    assert lr_after(falling, "max") == pytest.approx(0.1)  # what a max-mode plateau did to it


@pytest.mark.parametrize(("rule", "mode"), [("val_classdiff", "min"), ("val_worst_group", "max")])
def test_trainer_gives_the_plateau_scheduler_the_rules_direction(monkeypatch, rule, mode) -> None:
    import debiaslab.engine.trainer as trainer_module

    seen: list[str] = []

    def recording(optimizer, cfg, epochs, plateau_mode="max"):
        seen.append(plateau_mode)
        return build_scheduler(optimizer, cfg, epochs, plateau_mode)

    monkeypatch.setattr(trainer_module, "build_scheduler", recording)
    train, val = toy_splits(128, 64)
    hp = {"model": "mlp", "model_kwargs": {"width": 8, "depth": 1}, "epochs": 1, "scheduler": "plateau"}
    get_method("erm")(**hp, selection=rule).fit(train, val, trainer=Trainer(progress=False))
    assert seen == [mode]


# ------------------------------------------------------------------------------------------------ DeTT
def image_splits() -> tuple[GroupDataset, GroupDataset]:
    return toy_splits(128, 64, n_features=32, shape=(2, 4, 4))


def test_dett_matches_the_teachers_feature_map_through_the_reimplementations_projector() -> None:
    """The public DeTT re-implementation (github.com/molereddy/distillation-group-analysis, local_models.py
    ``SimKD(s_n, t_n, factor=2)``, used for DeTT in run_exp.py): the student's final feature map passes 1x1 -> 3x3
    -> 1x1 convolutions without biases to the teacher's C channels, hidden C/2, each followed by BN and ReLU; the
    teacher's head is transplanted. (The DeTT paper only says the feature map outputs are matched.)"""
    train, val = image_splits()
    teacher_hp = {"model": "cnn3", "model_kwargs": {"channels": [8, 8, 16]}, "epochs": 1, "batch_size": 64}
    common = {"teacher_method": "erm", "teacher_hparams": teacher_hp, "epochs": 1, "batch_size": 64}
    student_kw = {"model": "cnn3", "model_kwargs": {"channels": [4, 4, 8]}, "detector_epochs": 1}
    trainer = RecordingTrainer()
    method = DeTT(**common, **student_kw).fit(train, val, trainer=trainer)
    fit = method.fit_result_
    assert fit.extras["projector"] == "map" and fit.model_spec["name"] == "projected_map"
    assert fit.extras["map_projector"] == "simkd" and "local_models.py" in method.hparam_sources["map_projector"]
    student = method.model_
    layers = [type(m).__name__ for m in student.projector]
    assert layers == ["Conv2d", "BatchNorm2d", "ReLU"] * 3
    convs = [m for m in student.projector if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (8, 8, (1, 1)),
        (8, 8, (3, 3)),
        (8, 16, (1, 1)),
    ]
    assert all(c.bias is None for c in convs)
    teacher = method.readout_models_["teacher"]
    assert torch.equal(student.head.weight, teacher.head.weight) and not student.head.weight.requires_grad
    # the projector is trained: its weights moved from their initial values
    start = trainer.initial["dett_student"]
    moved = [
        k for k in start if "projector" in k and "weight" in k and not torch.equal(start[k], student_state(method)[k])
    ]
    assert moved
    # the loss is the map MSE (student map vs teacher map), per example
    x = val.x[:4]
    student.eval()
    with torch.no_grad():
        smap, tmap = student.feature_map(x), teacher.feature_map(x)
        assert smap.shape[1] == tmap.shape[1] == 16
        assert torch.allclose(student(x), teacher.head(smap.mean(dim=(2, 3))), atol=1e-5)
        expected = (smap - tmap).pow(2).mean(dim=(1, 2, 3))
        assert torch.allclose(map_mse(smap, tmap), expected)


def student_state(method: DeTT) -> dict[str, torch.Tensor]:
    return {f"student.{k}": v for k, v in method.model_.state_dict().items()}


def test_dett_vector_projector_for_mlps_and_as_an_option() -> None:
    train, val = toy_splits(128, 64)
    teacher_hp = {"model": "mlp", "model_kwargs": {"width": 16, "depth": 1}, "epochs": 1}
    method = DeTT(
        teacher_method="erm", teacher_hparams=teacher_hp, model="mlp", model_kwargs={"width": 8, "depth": 1}, epochs=1
    )
    method.fit(train, val, trainer=Trainer(progress=False))
    assert method.fit_result_.extras["projector"] == "vector" and method.fit_result_.model_spec["name"] == "projected"
    img_train, img_val = image_splits()
    teacher_hp = {"model": "cnn3", "model_kwargs": {"channels": [8, 8, 16]}, "epochs": 1}
    vector = DeTT(
        teacher_method="erm", teacher_hparams=teacher_hp, model="cnn3", model_kwargs={"channels": [4, 4, 8]},
        epochs=1, detector_epochs=1, projector="vector",
    )  # fmt: skip
    vector.fit(img_train, img_val, trainer=Trainer(progress=False))
    assert vector.fit_result_.model_spec["name"] == "projected"
    with pytest.raises(ConfigError, match="projector=map needs a convolutional teacher and student"):
        DeTT(teacher_method="erm", teacher_hparams={"epochs": 1}, epochs=1, projector="map").fit(
            train, val, trainer=Trainer(progress=False)
        )
    with pytest.raises(ConfigError, match="projector 'conv' unknown"):
        DeTT(projector="conv")


def test_dett_our_map_projector_is_an_option_named_ours() -> None:
    train, val = image_splits()
    teacher_hp = {"model": "cnn3", "model_kwargs": {"channels": [8, 8, 16]}, "epochs": 1}
    method = DeTT(
        teacher_method="erm", teacher_hparams=teacher_hp, model="cnn3", model_kwargs={"channels": [4, 4, 8]},
        epochs=1, detector_epochs=1, map_projector="ours",
    )  # fmt: skip
    method.fit(train, val, trainer=Trainer(progress=False))
    layers = [type(m).__name__ for m in method.model_.projector]
    assert layers == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert method.model_.projector[0].out_channels == 4 and method.model_.projector[-1].bias is not None
    assert method.fit_result_.model_spec["kwargs"]["style"] == "ours"
    with pytest.raises(ConfigError, match="map_projector 'x' unknown"):
        DeTT(map_projector="x")


def test_map_alignment_pools_the_larger_map_or_resizes_the_students() -> None:
    """The re-implementation adaptively average-pools the larger of the two maps to the smaller's size; ours resizes
    the student's map to the teacher's (bilinear)."""
    student, teacher = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 4, 4)
    teacher[:, :, :2, :2] = 4.0  # its 2x2 average pool is 4 in the top-left cell, 0 elsewhere
    assert torch.allclose(map_mse(student, teacher), torch.full((2,), (9.0 + 3.0) / 4))
    assert torch.allclose(map_mse(student, teacher, "resize"), torch.full((2,), (4 * 9.0 + 12 * 1.0) / 16))
    # a student whose map is larger than the teacher's is pooled to the teacher's size before the projector
    model = build_model("projected_map", (2, 8, 8), 2, base="cnn3", base_kwargs={"channels": [4, 4, 4]}, dim=6,
                        pool_to=[1, 1])  # fmt: skip
    assert model.base.feature_map(torch.zeros(1, 2, 8, 8)).shape[-1] > 1
    assert model.feature_map(torch.zeros(3, 2, 8, 8)).shape == (3, 6, 1, 1)


# ------------------------------------------------------------------------------------------------ catalog / CLI
def test_label_needs_say_when_the_default_selection_uses_validation_attributes() -> None:
    jtt = label_needs(get_method("jtt"))
    assert jtt.startswith("training: none")
    assert "colored_mnist: val_unbiased: needs validation attributes" in jtt
    assert label_needs(get_method("groupdro")).startswith("training: attribute labels")
    assert "validation attributes (the method trains on them)" in label_needs(get_method("dfr"))


def test_methods_name_shows_every_preset_value_and_source(capsys) -> None:
    card = method_card(get_method("bam"))
    wb = card["presets"]["waterbirds"]
    assert wb["lr"] == {"value": 1e-5, "source": wb["lr"]["source"]} and "run_metaScript.py" in wb["lr"]["source"]
    assert {"(no dataset)", "colored_mnist", "waterbirds", "celeba", "bffhq", "corrupted_cifar10"} <= set(
        card["presets"]
    )
    assert main(["methods", "bam", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["presets"]["waterbirds"]["upweight_weight_decay"]["value"] == 1.0
    assert main(["methods", "rest"]) == 0
    out = capsys.readouterr().out
    assert "rest on colored_mnist" in out and "dro_dataset.py" in out
    assert main(["methods", "--format", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "val_unbiased: needs validation attributes" in rows["lff"]["labels"]
    assert main(["methods", "nope"]) == 2


SUBPOP_SPUCO_METHODS = {
    "irm", "vrex", "coral", "mmd", "cvar_dro", "chi2_dro", "mixup", "lisa", "focal", "cb_loss", "cb_loss_group", "ldam",
    "ldam_drw", "bsoftmax", "sqrt_reweight_group", "sqrt_reweight_class", "crt", "crt_group", "reweight_crt",
    "reweight_crt_group", "afr", "ssa",
}  # fmt: skip


def test_every_method_has_a_family_and_the_list_groups_by_family_or_labels(capsys) -> None:
    builtin = [m for m in list_methods() if m.__module__.startswith("debiaslab.methods.")]
    assert all(m.family in FAMILIES for m in builtin), [m.name for m in builtin if m.family not in FAMILIES]
    assert {m.name for m in builtin} >= SUBPOP_SPUCO_METHODS
    by_family = grouped(builtin, "family")
    assert [g for g, _, _ in by_family] == [f for f in FAMILIES if any(m.family == f for m in builtin)]
    assert sum(len(members) for _, _, members in by_family) == len(builtin)
    labels = {g: {m.name for m in members} for g, _, members in grouped(builtin, "labels")}
    assert list(labels) == list(TRAINING_LABELS)
    assert {"irm", "lisa", "groupdro"} <= labels["training attributes"]
    assert {"dfr", "ssa"} <= labels["validation attributes"] and {"afr", "crt", "focal"} <= labels["none"]
    assert training_labels(get_method("ssa")) == "validation attributes"
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "invariance" in out and "last-layer retraining" in out and "pseudo attribute labels" in out
    cells = {cell.strip() for line in out.splitlines() for cell in line.split("│")}
    assert {m.name for m in builtin} <= cells  # whole names in 80-column tables (captured: not a terminal)
    assert main(["methods", "--by", "labels", "--format", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) >= SUBPOP_SPUCO_METHODS and rows["irm"]["family"] == "invariance"
    assert rows["afr"]["training_labels"] == "none"


@pytest.mark.parametrize(
    ("name", "source"),
    [("irm", "hparams_registry.py"), ("vrex", "DomainBed"), ("lisa", "huaxiuyao/LISA"), ("afr", "AndPotap/afr"),
     ("ssa", "SpuCo"), ("ldam_drw", "LDAM-DRW"), ("crt", "SubpopBench")],
)  # fmt: skip
def test_methods_name_shows_the_presets_with_their_sources(capsys, name: str, source: str) -> None:
    assert main(["methods", name]) == 0
    out = capsys.readouterr().out
    assert f"{name} on (no dataset)" in out and source in out.replace("\n", "")
