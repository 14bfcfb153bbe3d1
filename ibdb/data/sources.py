"""The task sources' readers: each turns a spec's source into a :class:`RawData` (a pool or a
fixed split, any numeric dtype), which :func:`ibdb.data.task.load_task` splits, preprocesses
and checks. The registry (:data:`ibdb.spec.sources.SOURCES`) names each source's reader here,
called as ``read(task, source, spec_dir)``, and, for sources whose size the spec or a look at
the file tells, its memory check, ``memory(task, spec_dir)``, which the plan calls before
anything is read.

Public formats' parsers and the generators are in :mod:`ibdb.data.datasets`; a reader adds the
fingerprint that names its data (content hashes for files; the settings and a version tag for
generated data) and the shape of one example.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ibdb.core.errors import DataError, shorten
from ibdb.core.memory import require_memory
from ibdb.data import datasets
from ibdb.data.task import RawData
from ibdb.spec.sources import (
    Cifar10Source,
    DigitsSource,
    IdxSource,
    Mnist1dSource,
    NpzSource,
    OmniglotSource,
    ParquetSource,
    PendulumSource,
    SourceSpec,
    SyntheticSource,
    Task,
)

NPZ_ARRAYS = ("X_train", "y_train", "X_test", "y_test")
DIGITS_IMAGE_SHAPE = (1, 8, 8)  # one grey channel, 8 x 8 pixels, stored row by row


def resolve_source_path(source: SourceSpec, spec_dir: Path) -> Path:
    """The source's file (``path``) or folder (``root``); a relative one is taken from the
    spec file's folder."""
    raw = getattr(source, "root", None) or source.path  # type: ignore[attr-defined]
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (Path(spec_dir) / path)


# -- readers ------------------------------------------------------------------------------------


def read_npz(task: Task, source: NpzSource, spec_dir: Path) -> RawData:
    return _load_npz(task, resolve_source_path(source, spec_dir))


def read_digits(task: Task, source: DigitsSource, spec_dir: Path) -> RawData:
    x, labels, fingerprint = _load_digits()
    return RawData(x, labels, None, None, fingerprint, DIGITS_IMAGE_SHAPE,
                   int(labels.max()) + 1)


def read_idx(task: Task, source: IdxSource, spec_dir: Path) -> RawData:
    arrays = datasets.load_idx_dataset(resolve_source_path(source, spec_dir), source.kind)
    return _image_split(source.kind, arrays)


def read_cifar10(task: Task, source: Cifar10Source, spec_dir: Path) -> RawData:
    return _image_split(source.kind, datasets.load_cifar10(resolve_source_path(source,
                                                                               spec_dir)))


def _image_split(kind: str, arrays: datasets.Arrays) -> RawData:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    x_train, labels_train, x_test, labels_test = arrays
    return RawData(x_train, labels_train, x_test, labels_test, f"{kind}:{digest.hexdigest()}",
                   tuple(x_train.shape[1:]),
                   int(max(labels_train.max(), labels_test.max())) + 1, divisor=255.0)


def read_omniglot(task: Task, source: OmniglotSource, spec_dir: Path) -> RawData:
    arrays, digest = datasets.omniglot_episode(
        resolve_source_path(source, spec_dir), background=source.background,
        n_way=source.n_way, k_shot=source.k_shot, episode_seed=source.episode_seed)
    return RawData(*arrays, f"omniglot:{digest}", tuple(arrays[0].shape[1:]), source.n_way)


def read_parquet(task: Task, source: ParquetSource, spec_dir: Path) -> RawData:
    path = resolve_source_path(source, spec_dir)
    if not path.is_file():
        raise DataError(f"task {task.name!r}: source.path {str(path)!r}: no such file. "
                        "Check the path (relative paths are taken from the spec file's "
                        "folder).")
    x, labels, split = datasets.load_parquet(path)
    fingerprint = "parquet:" + hashlib.sha256(path.read_bytes()).hexdigest()
    n_classes = int(labels.max()) + 1
    if split is None:
        return RawData(x, labels, None, None, fingerprint, None, n_classes, origin=str(path))
    train, test = split == "train", split == "test"
    return RawData(x[train], labels[train], x[test], labels[test], fingerprint, None,
                   n_classes, origin=str(path))


def _generated_fingerprint(source: SourceSpec) -> str:
    # Generated data is a function of its parameters and of the generator's code: the version
    # tag changes whenever the construction does, so that old runs are not mistaken for new.
    return f"{source.kind}:v1:" + json.dumps(source.identity(), sort_keys=True,
                                             separators=(",", ":"))


def read_synthetic(task: Task, source: SyntheticSource, spec_dir: Path) -> RawData:
    x, labels = datasets.synthetic_task(**source.model_dump(exclude={"kind"}))
    return RawData(x, labels, None, None, _generated_fingerprint(source), None,
                   source.n_classes)


def read_pendulum(task: Task, source: PendulumSource, spec_dir: Path) -> RawData:
    x, _, labels = datasets.pendulum_task(**source.model_dump(exclude={"kind"}))
    return RawData(x, labels, None, None, _generated_fingerprint(source), None, source.n_bins)


def read_mnist1d(task: Task, source: Mnist1dSource, spec_dir: Path) -> RawData:
    return _load_mnist1d(source.model_dump(mode="json", exclude={"kind"}))


def _load_mnist1d(params: dict) -> RawData:
    """MNIST-1D from the mnist1d package's generator: its own train / test split, signals as
    1 x 1 x length images. The fingerprint names every generator setting and the package's
    version, whose code is the construction (a new version may draw other signals)."""
    args = datasets.mnist1d_args(**params)
    fingerprint = (f"mnist1d:v1:{datasets.mnist1d_version()}:"
                   + json.dumps(args, sort_keys=True, separators=(",", ":")))
    x_train, labels_train, x_test, labels_test = datasets.mnist1d_task(**params)
    return RawData(x_train, labels_train, x_test, labels_test, fingerprint,
                tuple(x_train.shape[1:]), int(max(labels_train.max(), labels_test.max())) + 1,
                origin="the generated mnist1d data")


def _load_digits() -> tuple[np.ndarray, np.ndarray, str]:
    raw = _read_digits_file()
    x = raw[:, :-1] / 16.0  # pixel intensities 0..16 -> [0, 1]
    labels = raw[:, -1].astype(np.int64)
    # The data ships with scikit-learn and never changes; its identity is its name.
    return x, labels, "digits:sklearn-8x8"


def _read_digits_file() -> np.ndarray:
    """scikit-learn's digits CSV (64 pixels, then the label), as float64 rows.

    Importing scikit-learn costs about a second, longer than a whole small run, so the file it
    ships is read directly; ``load_digits`` is the fallback if the file ever moves.
    """
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return np.loadtxt(path, delimiter=",", dtype=np.float64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.column_stack([bunch.data, bunch.target]).astype(np.float64)


def _load_npz(task: Task, path: Path) -> RawData:
    where = f"task {task.name!r}: source.path {str(path)!r}"
    if not path.is_file():
        raise DataError(f"{where}: no such file. Check the path (relative paths are taken "
                        "from the spec file's folder).")
    content = path.read_bytes()
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in NPZ_ARRAYS if name not in npz.files]
            if missing:
                raise DataError(f"{where}: missing arrays {', '.join(missing)} (found: "
                                f"{', '.join(npz.files) or 'none'}). Save the file with "
                                f"np.savez(path, {', '.join(f'{n}=...' for n in NPZ_ARRAYS)}).")
            arrays = {name: npz[name] for name in NPZ_ARRAYS}
    # (a damaged deflate stream raises zlib.error; a damaged zip header NotImplementedError
    # "compression method not supported" or RuntimeError "encrypted")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        raise DataError(f"{where}: not a readable .npz file ({shorten(str(exc), 200)}). Save it "
                        "again with np.savez(path, X_train=..., y_train=..., X_test=..., "
                        "y_test=...).") from None
    x_train, x_test = (_features(arrays[n], n, where) for n in ("X_train", "X_test"))
    if x_train.shape[1] != x_test.shape[1]:
        raise DataError(f"{where}: X_train has {x_train.shape[1]} features but X_test has "
                        f"{x_test.shape[1]}; they must match.")
    shapes = [arrays[n].shape[1:] for n in ("X_train", "X_test")]
    if shapes[0] != shapes[1]:
        raise DataError(f"{where}: X_train's examples have shape {shapes[0]} but X_test's have "
                        f"{shapes[1]}; save both with the same per-example shape.")
    labels_train = _labels(arrays["y_train"], "y_train", len(x_train), where)
    labels_test = _labels(arrays["y_test"], "y_test", len(x_test), where)
    return RawData(x_train, labels_train, x_test, labels_test,
                "npz:" + hashlib.sha256(content).hexdigest(), _image_shape(arrays["X_train"]),
                int(max(labels_train.max(), labels_test.max())) + 1, origin=str(path))


def _image_shape(array: np.ndarray) -> tuple[int, ...] | None:
    """(channels, height, width) for X of shape (n, h, w) or (n, c, h, w); None otherwise."""
    if array.ndim == 3:
        return (1, *array.shape[1:])
    if array.ndim == 4:
        return tuple(array.shape[1:])
    return None


def _features(array: np.ndarray, name: str, where: str) -> np.ndarray:
    if array.ndim < 2 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{where}: {name} must be a non-empty numeric array of shape (n, ...); "
                        f"got dtype {array.dtype}, shape {array.shape}.")
    if np.iscomplexobj(array):  # astype(float64) would drop the imaginary parts silently
        raise DataError(f"{where}: {name} is complex ({array.dtype}); save real features.")
    return array.reshape(len(array), -1).astype(np.float64)


def _labels(array: np.ndarray, name: str, n_rows: int, where: str) -> np.ndarray:
    if array.ndim == 2:  # one-hot rows -> class indices
        if not np.isin(array, (0, 1)).all() or not (array.sum(axis=1) == 1).all():
            raise DataError(f"{where}: {name} is 2-D but not one-hot (each row must hold a "
                            "single 1 and zeros).")
        array = array.argmax(axis=1)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise DataError(f"{where}: {name} must hold non-negative integer class labels (1-D) or "
                        f"one-hot rows (2-D); got dtype {array.dtype}, shape {array.shape}.")
    if len(array) != n_rows:
        raise DataError(f"{where}: {name} has {len(array)} labels for {n_rows} examples.")
    return array.astype(np.int64)


# -- memory checks before reading ----------------------------------------------------------------


def synthetic_memory(task: Task, spec_dir: Path) -> None:
    source = task.source
    assert isinstance(source, SyntheticSource)
    require_memory(
        datasets.synthetic_bytes(**source.model_dump()),
        f"task {task.name!r}: source synthetic with n_points = {source.n_points}, ambient_dim = "
        f"{source.ambient_dim}, intrinsic_dim = {source.intrinsic_dim}, n_classes = "
        f"{source.n_classes}, teacher_width = {source.teacher_width} (estimate: 8 bytes x "
        "(4 n d + 3 d m + n (3 m + 2 width + 3 classes)))",
        "Lower source.n_points or source.ambient_dim.")


def pendulum_memory(task: Task, spec_dir: Path) -> None:
    source = task.source
    assert isinstance(source, PendulumSource)
    require_memory(
        datasets.pendulum_bytes(n_points=source.n_points, n_bins=source.n_bins,
                                steps=source.steps),
        f"task {task.name!r}: source pendulum with n_points = {source.n_points}, n_bins = "
        f"{source.n_bins} (estimate: 8 bytes x (15 n + 2 bins + n bins))",
        "Lower source.n_points or source.n_bins.")


def file_memory(task: Task, spec_dir: Path) -> None:
    """Refuse a file whose largest label makes one-hot targets too large to allocate."""
    n_classes = _file_class_count(task.source, spec_dir)
    if n_classes is not None:
        rows = task.n_train + task.n_test
        require_memory(
            8 * rows * n_classes,
            f"task {task.name!r}: source.path: its largest label {n_classes - 1} makes "
            f"{n_classes} classes; one-hot targets of n_train + n_test = {rows} points (8 bytes "
            "x points x classes)",
            "Labels must be class indices 0, 1, ..., k - 1: renumber them (or keep a few "
            "with preprocess.classes).")


def _file_class_count(source: NpzSource | ParquetSource, spec_dir: Path) -> int | None:
    """1 + the largest label in an npz's y_train / y_test or a Parquet file's label column
    (an npz's one-hot labels: their columns); None when the file cannot be read that way
    (loading the task then says why)."""
    path = resolve_source_path(source, spec_dir)
    try:
        if isinstance(source, ParquetSource):
            import duckdb

            with duckdb.connect() as con:
                top = con.execute('SELECT max("label") FROM read_parquet(?)',
                                  [str(path)]).fetchone()
            value = top[0] if top else None
            return int(value) + 1 if isinstance(value, int) and value >= 0 else None
        with np.load(path, allow_pickle=False) as npz:
            counts = []
            for name in ("y_train", "y_test"):
                labels = npz[name]
                if labels.ndim == 2:
                    counts.append(labels.shape[1])
                elif labels.ndim == 1 and labels.size and np.issubdtype(labels.dtype,
                                                                        np.integer):
                    counts.append(int(labels.max()) + 1)
            return max(counts) if counts else None
    except Exception:  # noqa: BLE001 (any unreadable file: load_task reports it properly)
        return None


