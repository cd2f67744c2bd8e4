"""Shared fixtures: the real MNIST data root (required: CI always provides it) and a per-session cache dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from debiaslab.data.mnist import MNIST_FILES
from debiaslab.utils.paths import CACHE_ENV, DATA_ENV

REPO = Path(__file__).resolve().parents[1]

pytest.register_assert_rewrite("toys")  # the shared helpers' asserts explain their failures too


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$DEBIASLAB_DATA`` (else ``<repo>/../shared/data``); fails loudly when MNIST is not there."""
    root = Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "data")
    dirs = (root / "mnist", root / "MNIST" / "raw", root)
    missing = [n for n in MNIST_FILES if not any((d / f).is_file() for d in dirs for f in (n, n + ".gz"))]
    if missing:
        pytest.fail(
            f"MNIST ({', '.join(missing)}) not found under {root}; set ${DATA_ENV} to the folder of mnist/",
            pytrace=False,
        )
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One derived-dataset cache for the whole session, so each Colored MNIST recipe is built once."""
    return tmp_path_factory.mktemp("debiaslab-cache")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(cache_dir: Path, data_root: Path) -> Iterator[None]:
    """No test writes to the user's cache (``$DEBIASLAB_CACHE`` is the session cache) and every test, and every
    subprocess it starts, reads MNIST from the verified data root, never from the network."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(cache_dir))
        mp.setenv(DATA_ENV, str(data_root))
        yield


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models run
    fastest single-threaded and extra threads only contend on a shared machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
