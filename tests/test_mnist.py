"""MNIST: IDX reading, checksums, locating, and downloading from a local HTTP server (never the internet)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from debiaslab.data import mnist as mnist_mod
from debiaslab.data.mnist import (
    MNIST_FILES,
    MNIST_SHA256,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    load_mnist,
    locate_mnist,
    read_idx,
)
from debiaslab.errors import DataError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
IDX_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file for ``arr`` (written independently of the reader under test)."""
    code = IDX_CODES[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only 127.0.0.1 may be contacted, and the user cache (download fallback) is a temp dir."""
    real = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        host = urllib.parse.urlsplit(url if isinstance(url, str) else url.full_url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {url}"
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def tiny() -> dict[str, np.ndarray]:
    """Small fixture MNIST: 20 train / 10 test random images."""
    rng = np.random.default_rng(0)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: np.arange(20, dtype=np.uint8) % 10,
        TEST_IMAGES: rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        TEST_LABELS: np.arange(10, dtype=np.uint8),
    }


@pytest.fixture(scope="module")
def tiny_sums(tiny: dict[str, np.ndarray]) -> dict[str, str]:
    return {n: hashlib.sha256(idx_bytes(a)).hexdigest() for n, a in tiny.items()}


def write_tiny(folder: Path, tiny: dict[str, np.ndarray], gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in tiny.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
        else:
            (folder / name).write_bytes(idx_bytes(arr))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server on 127.0.0.1 serving a temp folder: yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------------------------------------- reading
def test_real_mnist_loads_verified(data_root: Path) -> None:
    m = load_mnist(data_root, download=False)
    assert m.train_x.shape == (60000, 28, 28) and m.train_x.dtype == np.uint8
    assert m.test_x.shape == (10000, 28, 28) and m.test_x.dtype == np.uint8
    assert m.train_y.dtype == m.test_y.dtype == np.int64
    assert np.bincount(m.train_y).tolist() == TRAIN_COUNTS
    assert np.bincount(m.test_y).tolist() == TEST_COUNTS
    assert set(m.files) == set(MNIST_FILES)


@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_read_idx_raw_and_gzip_roundtrip(tmp_path: Path, dtype: type) -> None:
    arr = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    for p in (tmp_path / "a", tmp_path / "a.gz"):
        out = read_idx(p)
        assert out.dtype == np.dtype(dtype) and out.dtype.isnative
        np.testing.assert_array_equal(out, arr)


def test_truncated_file_names_file_and_sizes(tmp_path: Path, tiny: dict[str, np.ndarray]) -> None:
    data = idx_bytes(tiny[TRAIN_IMAGES])
    raw = tmp_path / TRAIN_IMAGES
    raw.write_bytes(data[:1000])
    with pytest.raises(DataError, match=rf"{TRAIN_IMAGES}.*expected {len(data)} bytes.*found 1000"):
        read_idx(raw)
    gz = tmp_path / f"{TRAIN_LABELS}.gz"
    gz.write_bytes(gzip.compress(idx_bytes(tiny[TRAIN_LABELS]))[:-12])  # cut inside the gzip stream
    with pytest.raises(DataError, match=rf"{TRAIN_LABELS}\.gz.*(truncated|corrupt)"):
        read_idx(gz)


def test_not_an_idx_file(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match=r"page\.html: not an IDX file"):
        read_idx(p)


def test_real_truncated_mnist_reports_expected_size(tmp_path: Path, data_root: Path) -> None:
    src = locate_mnist(data_root)[TRAIN_IMAGES]
    assert src is not None
    with gzip.open(src) if src.suffix == ".gz" else open(src, "rb") as fh:
        head = fh.read(1000)
    (tmp_path / TRAIN_IMAGES).write_bytes(head)
    with pytest.raises(DataError, match="expected 47040016 bytes, found 1000"):
        read_idx(tmp_path / TRAIN_IMAGES, sha256=None)


def test_wrong_checksum_names_file_hashes_and_fix(tmp_path: Path, data_root: Path) -> None:
    src = locate_mnist(data_root)[TEST_LABELS]
    assert src is not None
    raw = bytearray(read_idx_bytes(src))
    raw[100] ^= 0xFF  # right size, one label changed
    bad = tmp_path / "mnist" / f"{TEST_LABELS}.gz"
    bad.parent.mkdir()
    bad.write_bytes(gzip.compress(bytes(raw)))
    for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES):
        real = locate_mnist(data_root)[name]
        assert real is not None
        (tmp_path / "mnist" / real.name).symlink_to(real)
    found = hashlib.sha256(bytes(raw)).hexdigest()
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, download=False)
    msg = str(err.value)
    assert str(bad) in msg and MNIST_SHA256[TEST_LABELS] in msg and found in msg and "delete" in msg


def read_idx_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def test_verification_is_cached_until_the_file_changes(
    tmp_path: Path, tiny: dict[str, np.ndarray], tiny_sums: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / TEST_LABELS
    p.write_bytes(idx_bytes(tiny[TEST_LABELS]))
    read_idx(p, sha256=tiny_sums[TEST_LABELS])
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(mnist_mod.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    read_idx(p, sha256=tiny_sums[TEST_LABELS])
    assert calls == []  # remembered: not hashed again
    st = p.stat()
    p.write_bytes(idx_bytes(tiny[TEST_LABELS][::-1].copy()))  # same size, new content...
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # ...and a new mtime
    with pytest.raises(DataError, match="SHA-256"):
        read_idx(p, sha256=tiny_sums[TEST_LABELS])
    assert calls


# ---------------------------------------------------------------------------------------------- locating
@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", "."])
@pytest.mark.parametrize("gz", [True, False])
def test_locate_layouts(
    tmp_path: Path, tiny: dict[str, np.ndarray], tiny_sums: dict[str, str], layout: str, gz: bool
) -> None:
    root = tmp_path / "root"
    write_tiny(root / layout, tiny, gz=gz)
    found = locate_mnist(root)
    assert all(p is not None and p.parent == (root / layout) for p in found.values())
    m = load_mnist(root, download=False, checksums=tiny_sums)
    np.testing.assert_array_equal(m.train_x, tiny[TRAIN_IMAGES])
    np.testing.assert_array_equal(m.test_y, tiny[TEST_LABELS].astype(np.int64))


def test_missing_without_download_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path / "empty", download=False)
    msg = str(err.value)
    assert all(n in msg for n in MNIST_FILES)
    assert str(tmp_path / "empty" / "mnist") in msg and "--data-root" in msg and "DEBIASLAB_DATA" in msg


# ---------------------------------------------------------------------------------------------- downloading
def test_download_from_mirror_verified(
    tmp_path: Path, tiny: dict[str, np.ndarray], tiny_sums: dict[str, str], http_dir: tuple[Path, str]
) -> None:
    served, url = http_dir
    write_tiny(served, tiny)
    root = tmp_path / "data"
    dead = url + "nothing-here/"  # 404 first: the next mirror is tried
    m = load_mnist(root, mirrors=[dead, url], checksums=tiny_sums)
    for name in MNIST_FILES:
        assert (root / "mnist" / name).is_file()  # stored uncompressed
        assert hashlib.sha256((root / "mnist" / name).read_bytes()).hexdigest() == tiny_sums[name]
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(MNIST_FILES)  # no temp files left
    np.testing.assert_array_equal(m.test_x, tiny[TEST_IMAGES])
    # a second load finds the files and does not download again
    load_mnist(root, mirrors=["http://127.0.0.1:9/"], checksums=tiny_sums)


def test_corrupt_download_is_refused_and_leaves_nothing(
    tmp_path: Path, tiny: dict[str, np.ndarray], tiny_sums: dict[str, str], http_dir: tuple[Path, str]
) -> None:
    served, url = http_dir
    write_tiny(served, tiny)
    bad = bytearray(idx_bytes(tiny[TRAIN_IMAGES]))
    bad[-1] ^= 0xFF
    (served / f"{TRAIN_IMAGES}.gz").write_bytes(gzip.compress(bytes(bad)))
    (served / f"{TEST_LABELS}.gz").write_bytes(gzip.compress(idx_bytes(tiny[TEST_LABELS]))[:-20])
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        load_mnist(root, mirrors=[url], checksums=tiny_sums)
    msg = str(err.value)
    assert TRAIN_IMAGES in msg and TEST_LABELS in msg and url in msg and "--data-root" in msg
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted([TRAIN_LABELS, TEST_IMAGES])


def test_corrupt_download_never_replaces_a_good_file(
    tmp_path: Path, tiny: dict[str, np.ndarray], tiny_sums: dict[str, str], http_dir: tuple[Path, str]
) -> None:
    served, url = http_dir
    (served / f"{TRAIN_LABELS}.gz").write_bytes(gzip.compress(b"garbage"))
    root = tmp_path / "data"
    write_tiny(root / "mnist", {n: a for n, a in tiny.items() if n != TRAIN_LABELS}, gz=False)
    with pytest.raises(DataError, match=TRAIN_LABELS):
        load_mnist(root, mirrors=[url], checksums=tiny_sums)
    good = {n: (root / "mnist" / n).read_bytes() for n in (TRAIN_IMAGES, TEST_IMAGES, TEST_LABELS)}
    assert all(hashlib.sha256(b).hexdigest() == tiny_sums[n] for n, b in good.items())
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(good)


def test_unwritable_root_downloads_into_user_cache(
    tmp_path: Path, tiny: dict[str, np.ndarray], tiny_sums: dict[str, str], http_dir: tuple[Path, str]
) -> None:
    served, url = http_dir
    write_tiny(served, tiny)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = blocker / "data"  # cannot be created, whoever runs the tests
    m = load_mnist(root, mirrors=[url], checksums=tiny_sums)
    cached = tmp_path / "xdg-cache" / "debiaslab" / "data" / "mnist"
    assert all((cached / n).is_file() for n in MNIST_FILES)
    assert m.files[TRAIN_IMAGES] == cached / TRAIN_IMAGES
    load_mnist(root, download=False, checksums=tiny_sums)  # found there next time
