"""MNIST: an IDX reader, a locator for the usual folder layouts, and a download that is verified by SHA-256.

Every file is checked against the SHA-256 of its *uncompressed* bytes (the gzip bytes differ between mirrors,
their content does not). A verification is remembered per process for ``(path, mtime, size)``, so loading the
same files twice does not hash them twice. A download goes to a temp file beside its target, is gunzipped and
verified, and only then renamed into place: a partial or corrupt download never replaces a good file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from debiaslab.errors import DataError
from debiaslab.utils.io import give_default_permissions
from debiaslab.utils.paths import DATA_ENV, user_cache_dir

log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: SHA-256 of the four standard MNIST files after gunzip.
MNIST_SHA256: Mapping[str, str] = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Mirrors serving ``<mirror><name>.gz``, tried in order.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DOWNLOAD_TIMEOUT_S = 60.0

# IDX element type codes -> big-endian numpy dtypes.
_IDX_DTYPES: Mapping[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# (resolved path, mtime_ns, size, expected sha256) of files already verified in this process.
_VERIFIED: set[tuple[str, int, int, str]] = set()


@dataclass(frozen=True)
class MnistArrays:
    """The four MNIST arrays: images ``uint8 (N, 28, 28)``, labels ``int64 (N,)``; ``files``: their paths."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    files: Mapping[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- reading
def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=fh) as gz:
                    return gz.read()
            return fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        fix = "delete it and download it again"
        raise DataError(f"{path} is a truncated or corrupt gzip file ({exc}); {fix}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"{path}: expected an IDX header of at least 4 bytes, found {len(data)}")
    zero, code, ndim = int.from_bytes(data[0:2], "big"), data[2], data[3]
    if zero != 0 or code not in _IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (magic number 0x{data[:4].hex()}; expected 0x0000 followed by a type "
            f"code in {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)} and the number of dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: expected a {header}-byte IDX header, found {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{path}: expected {expected} bytes, found {len(data)} (an IDX {dtype.name} array of shape "
            f"{dims}); the file is truncated or corrupt: delete it and download it again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _verify(path: Path, data: bytes | None, expected: str) -> None:
    """Check the SHA-256 of the uncompressed content; remembered per (path, mtime, size)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, expected.lower())
    if key in _VERIFIED:
        return
    if data is None:
        data = _read_bytes(path)
    found = hashlib.sha256(data).hexdigest()
    if found != expected.lower():
        raise DataError(
            f"{path}: SHA-256 of the uncompressed content is {found}, expected {expected.lower()}; "
            "the file is corrupt or not the standard one: delete it and download it again"
        )
    _VERIFIED.add(key)


def read_idx(path: str | os.PathLike[str], *, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-endian array; verify it first when ``sha256`` is given.

    A truncated or corrupt file raises :class:`DataError` naming the file and the expected size.
    """
    path = Path(path)
    data = _read_bytes(path)
    if sha256 is not None:
        _verify(path, data, sha256)
    return _parse_idx(data, path)


# ---------------------------------------------------------------------------------------------- locating
def _search_dirs(data_root: Path) -> list[Path]:
    roots = [data_root]
    fallback = user_cache_dir() / "data"
    if fallback.expanduser().absolute() != data_root.expanduser().absolute():
        roots.append(fallback)
    dirs: list[Path] = []
    for root in roots:
        dirs += [root / "mnist", root / "MNIST" / "raw", root]
    return dirs


def locate_mnist(data_root: str | os.PathLike[str]) -> dict[str, Path | None]:
    """Where each MNIST file is: ``<root>/mnist/``, ``<root>/MNIST/raw/`` or ``<root>/``, as ``name`` or
    ``name.gz`` (then the same under the user cache's data folder, where downloads go when the root is
    read-only). ``None`` for a file found nowhere."""
    dirs = _search_dirs(Path(data_root))
    found: dict[str, Path | None] = {}
    for name in MNIST_FILES:
        found[name] = next(
            (d / n for d in dirs for n in (name, name + ".gz") if (d / n).is_file()),
            None,
        )
    return found


# ---------------------------------------------------------------------------------------------- downloading
def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def _download_one(url: str, target: Path, expected: str, timeout: float) -> None:
    """Fetch ``url`` (gzip), gunzip beside ``target``, verify, rename into place; clean up on any failure."""
    tmp_gz = tmp_raw = None
    try:
        fd, tmp_gz = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".gz.part", dir=target.parent)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        fd, tmp_raw = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, gzip.open(tmp_gz, "rb") as gz:
            while chunk := gz.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected.lower():
            raise DataError(f"SHA-256 of the download is {digest.hexdigest()}, expected {expected.lower()}")
        give_default_permissions(tmp_raw)
        os.replace(tmp_raw, target)
        tmp_raw = None
    finally:
        for tmp in (tmp_gz, tmp_raw):
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _download(
    names: Sequence[str],
    data_root: Path,
    mirrors: Sequence[str],
    checksums: Mapping[str, str],
    timeout: float,
) -> dict[str, str]:
    """Download the missing files; returns the failures as ``{name: 'url: reason; ...'}``."""
    target_dir = data_root / "mnist"
    if not _writable_dir(target_dir):
        fallback = user_cache_dir() / "data" / "mnist"
        log.warning("data root %s is not writable; downloading MNIST into %s instead", data_root, fallback)
        target_dir = fallback
        if not _writable_dir(target_dir):
            return {name: f"neither {data_root / 'mnist'} nor {target_dir} is writable" for name in names}
    failures: dict[str, str] = {}
    for name in names:
        reasons = []
        for mirror in mirrors:
            url = (mirror if mirror.endswith("/") else mirror + "/") + name + ".gz"
            log.info("downloading %s -> %s", url, target_dir / name)
            try:
                _download_one(url, target_dir / name, checksums[name], timeout)
            except (OSError, EOFError, zlib.error, DataError, ValueError) as exc:
                # URLError, HTTPError, timeouts and BadGzipFile are OSErrors.
                reason = getattr(exc, "reason", None) or exc
                log.warning("download of %s failed: %s", url, reason)
                reasons.append(f"{url}: {reason}")
                continue
            log.info("verified %s", target_dir / name)
            break
        else:
            failures[name] = "; ".join(reasons) or "no mirrors given"
    return failures


# ---------------------------------------------------------------------------------------------- loading
def load_mnist(
    data_root: str | os.PathLike[str],
    *,
    download: bool = True,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    checksums: Mapping[str, str] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> MnistArrays:
    """Load (and, when missing and allowed, download) the four MNIST files, each verified by SHA-256.

    Args:
        data_root: folder holding ``mnist/``, ``MNIST/raw/`` or the files themselves.
        download: fetch missing files from ``mirrors`` (into ``<root>/mnist/``, or the user cache's data
            folder when the root is read-only).
        checksums: SHA-256 of the uncompressed files by name; defaults to the standard MNIST ones (tests
            pass their own to serve small fixture files).
    """
    root = Path(data_root).expanduser()
    sums = dict(MNIST_SHA256 if checksums is None else checksums)
    missing_sums = [n for n in MNIST_FILES if n not in sums]
    if missing_sums:
        raise ValueError(f"checksums lack {', '.join(missing_sums)}")
    found = locate_mnist(root)
    missing = [n for n, p in found.items() if p is None]
    failures: dict[str, str] = {}
    if missing and download:
        failures = _download(missing, root, list(mirrors), sums, timeout)
        found = locate_mnist(root)
        missing = [n for n, p in found.items() if p is None]
    if missing:
        where = ", ".join(str(d) for d in _search_dirs(root)[:3])
        if not download:
            tried = "downloads are disabled (download=False)"
        else:
            tried = "tried " + " | ".join(f"{n}: {failures.get(n, '?')}" for n in missing)
        raise DataError(
            f"MNIST file(s) {', '.join(missing)} not found in {where} (as name or name.gz); {tried}. "
            f"Put the MNIST IDX files there, or point --data-root / ${DATA_ENV} at a folder that has them"
        )
    paths: dict[str, Path] = {n: p for n, p in found.items() if p is not None}
    arrays = {n: read_idx(p, sha256=sums[n]) for n, p in paths.items()}
    out = MnistArrays(
        train_x=_images(arrays[TRAIN_IMAGES], paths[TRAIN_IMAGES]),
        train_y=_labels(arrays[TRAIN_LABELS], paths[TRAIN_LABELS]),
        test_x=_images(arrays[TEST_IMAGES], paths[TEST_IMAGES]),
        test_y=_labels(arrays[TEST_LABELS], paths[TEST_LABELS]),
        files=paths,
    )
    for split, x, y in (("train", out.train_x, out.train_y), ("test", out.test_x, out.test_y)):
        if len(x) != len(y):
            raise DataError(f"MNIST {split}: {len(x)} images but {len(y)} labels; expected one per image")
    log.debug("loaded MNIST from %s", ", ".join(str(p) for p in paths.values()))
    return out


def _images(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images of shape (N, H, W), found {arr.dtype} {arr.shape}")
    return arr


def _labels(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 1 or (arr.size and int(arr.max()) > 9):
        raise DataError(f"{path}: expected digit labels 0..9 of shape (N,), found {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)
