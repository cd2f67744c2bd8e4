"""Train a method from Python and write the same run directory as ``debiaslab train``.

A run made in a notebook can then be evaluated (``debiaslab evaluate``), summarised (``debiaslab report``) and
used for predictions (``debiaslab predict``, ``debiaslab export``) from the command line::

    from debiaslab.data.registry import build_dataset
    from debiaslab.run.fit import fit_and_save
    from debiaslab.methods.registry import get_method

    bundle = build_dataset("colored_mnist", ratio=0.01)
    method = get_method("lff")(dataset="colored_mnist", epochs=5)
    final = fit_and_save(method, bundle.train, bundle.val, bundle.test, run_dir="runs/notebook/lff",
                         dataset="colored_mnist", dataset_options={"ratio": 0.01})

``dataset`` and ``dataset_options`` are what ``config.yaml`` records: give the registered dataset (and the options)
the splits came from, so that ``debiaslab evaluate RUN_DIR`` can rebuild them; for data of your own, leave them out
(the splits' name is recorded) and evaluate with ``--dataset``.
"""

from __future__ import annotations

import os
from typing import Any

from debiaslab.data.core import DatasetBundle, GroupDataset
from debiaslab.methods.base import Method
from debiaslab.run.train import RunConfig, run_method


def fit_and_save(
    method: Method,
    train: GroupDataset,
    val: GroupDataset,
    test: GroupDataset | None = None,
    *,
    run_dir: str | os.PathLike[str],
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "fp32",
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    num_threads: int | None = None,
    tensorboard: bool = False,
    mlflow: str | None = None,
    callbacks: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Fit ``method`` on ``train`` (selecting on ``val``), evaluate on ``val`` and ``test`` (only ``val`` when no test
    split is given) and write ``run_dir`` as ``debiaslab train`` does; returns the contents of ``final.json``.

    ``method.model_`` and ``method.fit_result_`` are set as after :meth:`Method.fit`. The user-given
    hyperparameters of ``method`` are the run's identity (with ``seed``, the dataset and its options), so
    ``resume=True`` continues an interrupted run of the same configuration."""
    bundle = DatasetBundle(
        name=dataset or train.name,
        train=train,
        val=val,
        test=test if test is not None else val,
        recipe={"source": "python", "splits": {s.split: len(s) for s in (train, val, test) if s is not None}},
        default_model=method.hparams.model,
    )
    user = {k: v for k, v in vars(method.hparams).items() if method.hparam_sources.get(k) == "user"}
    cfg = RunConfig(
        method=method.name,
        dataset=bundle.name,
        dataset_options=dict(dataset_options or {}),
        hparams=user,
        seed=seed,
        device=device,
        precision=precision,
        out=os.fspath(run_dir),
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        num_threads=num_threads,
        tensorboard=tensorboard,
        mlflow=mlflow,
    )
    return run_method(cfg, method, bundle, callbacks=callbacks)
