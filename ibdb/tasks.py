"""Task data: load a task's source, split it, and hand runners plain float64 arrays.

Targets are one-hot rows (k outputs = number of classes); losses compare predictions with them.
Features are always flat rows; image tasks also keep the shape of one example, so that a
convolutional runner can restore it. Loading never touches torch or the store.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibdb.errors import DataError, SpecError
from ibdb.specs import DigitsSource, NpzSource, Task

NPZ_ARRAYS = ("X_train", "y_train", "X_test", "y_test")
DIGITS_IMAGE_SHAPE = (1, 8, 8)  # one grey channel, 8 x 8 pixels, stored row by row


@dataclass(frozen=True)
class TaskData:
    """A split task: features, one-hot targets and integer labels, all float64 / int64."""

    x_train: np.ndarray  # (n_train, d)
    y_train: np.ndarray  # (n_train, k) one-hot
    x_test: np.ndarray  # (n_test, d)
    y_test: np.ndarray  # (n_test, k) one-hot
    labels_test: np.ndarray  # (n_test,) integer class of each test point
    fingerprint: str  # sha256 of the source's content, part of the run identity
    # (channels, height, width) of one example when the features are an image, else None;
    # x_*[i].reshape(image_shape) is example i as an image.
    image_shape: tuple[int, ...] | None = None

    @property
    def n_outputs(self) -> int:
        return self.y_train.shape[1]


def resolve_source_path(source: NpzSource, spec_dir: Path) -> Path:
    path = Path(source.path).expanduser()
    return path if path.is_absolute() else (spec_dir / path)


def load_task(task: Task, *, spec_dir: Path) -> TaskData:
    """Load and split ``task``; errors name the task, the field and the offending value."""
    if isinstance(task.source, DigitsSource):
        x_pool, labels_pool, fingerprint = _load_digits()
        return _split_pool(task, x_pool, labels_pool, fingerprint, DIGITS_IMAGE_SHAPE)
    path = resolve_source_path(task.source, spec_dir)
    return _load_npz(task, path)


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


def _split_pool(task: Task, x: np.ndarray, labels: np.ndarray, fingerprint: str,
                image_shape: tuple[int, ...] | None) -> TaskData:
    available = len(x)
    if task.n_train + task.n_test > available:
        raise SpecError(
            f"task {task.name!r}: n_train + n_test = {task.n_train} + {task.n_test} = "
            f"{task.n_train + task.n_test}, but the {task.source.kind} data has only "
            f"{available} examples. Lower n_train or n_test."
        )
    order = np.random.default_rng(task.split_seed).permutation(available)
    train, test = order[: task.n_train], order[task.n_train : task.n_train + task.n_test]
    n_classes = int(labels.max()) + 1
    return TaskData(
        x_train=x[train],
        y_train=_one_hot(labels[train], n_classes),
        x_test=x[test],
        y_test=_one_hot(labels[test], n_classes),
        labels_test=labels[test],
        fingerprint=fingerprint,
        image_shape=image_shape,
    )


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _load_npz(task: Task, path: Path) -> TaskData:
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
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{where}: not a readable .npz file ({exc}).") from None
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
    n_classes = int(max(labels_train.max(), labels_test.max())) + 1
    for name, n, have in (("n_train", task.n_train, len(x_train)),
                          ("n_test", task.n_test, len(x_test))):
        if n > have:
            raise SpecError(f"task {task.name!r}: {name} = {n}, but {path} holds only {have} "
                            f"{name[2:]} examples. Lower {name}.")
    rng = np.random.default_rng(task.split_seed)
    train = rng.permutation(len(x_train))[: task.n_train]
    test = rng.permutation(len(x_test))[: task.n_test]
    return TaskData(
        x_train=x_train[train],
        y_train=_one_hot(labels_train[train], n_classes),
        x_test=x_test[test],
        y_test=_one_hot(labels_test[test], n_classes),
        labels_test=labels_test[test],
        fingerprint="npz:" + hashlib.sha256(content).hexdigest(),
        image_shape=_image_shape(arrays["X_train"]),
    )


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
    flat = array.reshape(len(array), -1).astype(np.float64)
    if not np.isfinite(flat).all():
        raise DataError(f"{where}: {name} contains NaN or infinite values; clean them first.")
    return flat


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
