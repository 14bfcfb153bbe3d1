"""Task data: load a task's source, split it, and hand runners plain float64 arrays.

Targets are one-hot rows (k outputs = number of classes); losses compare predictions with them.
Features are always flat rows; image tasks also keep the shape of one example, so that a
convolutional runner can restore it. Loading never touches torch or the store.

Order of work: read the source (its registered reader, :mod:`ibdb.data.sources`), keep the
preprocessing's ``classes``, split, convert the chosen rows to float64, then downsample, scale
and project
(statistics from the training split only). Non-default preprocessing enters the fingerprint, and
so the run id; tasks without it keep the fingerprints they always had.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibdb.core.errors import DataError, SpecError
from ibdb.core.references import resolve
from ibdb.spec.sources import SOURCES, Preprocess, Task

MAX_FEATURE_MAGNITUDE = 1e150  # squared, 1e300: the last decade float64 distances hold


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
    # The examples are signals (a source of shape "signals"): image_shape is (channels, 1,
    # length), and a model that takes the natural shape sees (channels, length).
    signals: bool = False
    # A fixed sample of the source's points (ibdb.stats.bound.statistics_rows of its pool, or of
    # both
    # of its splits: at most STATISTICS_MAX_POINTS, drawn with a fixed seed), preprocessed like
    # the splits, and their integer labels; pool_size: how many points it was drawn from. What
    # the 2023 bound's task statistics are measured on, so that they do not change with n_train
    # or split_seed. None when a TaskData is built by hand. Not part of the run's identity.
    x_pool_sample: np.ndarray | None = None
    labels_pool_sample: np.ndarray | None = None
    pool_size: int | None = None

    @property
    def n_outputs(self) -> int:
        return self.y_train.shape[1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's natural shape, as a user's model receives it: (d,) for vectors,
        (channels, height, width) for images, (channels, length) for signals."""
        if self.image_shape is None:
            return (int(self.x_train.shape[1]),)
        if self.signals:
            channels, height, width = self.image_shape
            return (int(channels), int(height * width))
        return tuple(int(s) for s in self.image_shape)


@dataclass(frozen=True)
class RawData:
    """A source as its reader returns it (:mod:`ibdb.data.sources`): a pool (``x_test is
    None``) or a fixed train/test split. ``x_*`` may be any numeric dtype, shaped (n, ...);
    dividing by ``divisor`` gives the task's units."""

    x_train: np.ndarray
    labels_train: np.ndarray
    x_test: np.ndarray | None
    labels_test: np.ndarray | None
    fingerprint: str
    image_shape: tuple[int, ...] | None
    n_classes: int
    divisor: float = 1.0
    origin: str = ""  # how errors name the data: a file's path, else "the <kind> data"


def load_task(task: Task, *, spec_dir: Path) -> TaskData:
    """Load and split ``task``; errors name the task, the field and the offending value."""
    read = resolve(SOURCES.of(task.source).read)
    return _finish(task, read(task, task.source, spec_dir))


def _finish(task: Task, raw: RawData) -> TaskData:
    _check_feature_values(task, raw)
    pre = task.preprocess
    n_classes = raw.n_classes
    if pre.classes is not None:
        raw = _keep_classes(task, raw, pre.classes)
        n_classes = len(pre.classes)
    x_pool, labels_pool, pool_size = _pool_sample(raw)
    if raw.x_test is None:
        train, test = _pool_split(task, len(raw.x_train))
        parts = (raw.x_train[train], raw.labels_train[train], raw.x_train[test],
                 raw.labels_train[test])
    else:
        parts = _fixed_split(task, raw)
    x_train, labels_train, x_test, labels_test = parts
    x_train = x_train.reshape(len(x_train), -1).astype(np.float64) / raw.divisor
    x_test = x_test.reshape(len(x_test), -1).astype(np.float64) / raw.divisor
    x_pool = x_pool.reshape(len(x_pool), -1).astype(np.float64) / raw.divisor
    x_train, x_test, image_shape, x_pool = _preprocess(task, x_train, x_test, raw.image_shape,
                                                       x_pool)
    fingerprint = raw.fingerprint
    if pre != Preprocess():
        fingerprint += "|preprocess:" + pre.model_dump_json()
    return TaskData(
        x_train=x_train,
        y_train=_one_hot(labels_train, n_classes),
        x_test=x_test,
        y_test=_one_hot(labels_test, n_classes),
        labels_test=labels_test,
        fingerprint=fingerprint,
        image_shape=image_shape,
        signals=image_shape is not None and SOURCES.of(task.source).shape == "signals",
        x_pool_sample=x_pool,
        labels_pool_sample=labels_pool.astype(np.int64),
        pool_size=pool_size,
    )


def _pool_sample(raw: RawData) -> tuple[np.ndarray, np.ndarray, int]:
    """The source's points the 2023 bound's statistics are measured on (raw, not yet scaled):
    ibdb.stats.bound.statistics_rows of its pool (a fixed seeded subset when it holds more than
    STATISTICS_MAX_POINTS), or of its two splits taken together, rows of the training split
    first; and how many points they were drawn from. Whatever n_train and split_seed are."""
    from ibdb.stats.bound import statistics_rows  # imports nothing heavy at module level

    n_first = len(raw.x_train)
    n_second = 0 if raw.x_test is None else len(raw.x_test)
    rows = statistics_rows(n_first + n_second)
    first, second = rows[rows < n_first], rows[rows >= n_first] - n_first
    if raw.x_test is None or raw.labels_test is None or len(second) == 0:
        return raw.x_train[first], raw.labels_train[first], n_first + n_second
    return (np.concatenate([raw.x_train[first], raw.x_test[second]]),
            np.concatenate([raw.labels_train[first], raw.labels_test[second]]),
            n_first + n_second)


def _keep_classes(task: Task, raw: RawData, classes: list[int]) -> RawData:
    present = set(raw.labels_train.tolist())
    if raw.labels_test is not None:
        present |= set(raw.labels_test.tolist())
    absent = [c for c in classes if c not in present]
    if absent:
        raise SpecError(f"task {task.name!r}: preprocess.classes names {absent}, which the "
                        f"{task.source.kind} data does not hold (its classes: "
                        f"{sorted(present)[:20]}). Remove them.")
    relabel = np.full(max(max(present), max(classes)) + 1, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))

    def keep(x: np.ndarray | None, labels: np.ndarray | None) -> tuple:
        if x is None or labels is None:
            return None, None
        mask = relabel[labels] >= 0
        return x[mask], relabel[labels[mask]]

    x_train, labels_train = keep(raw.x_train, raw.labels_train)
    x_test, labels_test = keep(raw.x_test, raw.labels_test)
    return RawData(x_train, labels_train, x_test, labels_test, raw.fingerprint, raw.image_shape,
                len(classes), raw.divisor, raw.origin)


def _pool_split(task: Task, available: int) -> tuple[np.ndarray, np.ndarray]:
    if task.n_train + task.n_test > available:
        raise SpecError(
            f"task {task.name!r}: n_train + n_test = {task.n_train} + {task.n_test} = "
            f"{task.n_train + task.n_test}, but the {task.source.kind} data has only "
            f"{available} examples. Lower n_train or n_test."
        )
    order = np.random.default_rng(task.split_seed).permutation(available)
    if task.test_set == "shared":  # test points first: the same whatever n_train is
        return order[task.n_test : task.n_test + task.n_train], order[: task.n_test]
    return order[: task.n_train], order[task.n_train : task.n_train + task.n_test]


def _fixed_split(task: Task, raw: RawData) -> tuple[np.ndarray, ...]:
    assert raw.x_test is not None and raw.labels_test is not None
    for name, n, have in (("n_train", task.n_train, len(raw.x_train)),
                          ("n_test", task.n_test, len(raw.x_test))):
        if n > have:
            origin = raw.origin or f"the {task.source.kind} data"
            raise SpecError(f"task {task.name!r}: {name} = {n}, but {origin} holds only {have} "
                            f"{name[2:]} examples. Lower {name}.")
    # A source's own split is kept; split_seed picks which of its rows are used.
    rng = np.random.default_rng(task.split_seed)
    train = rng.permutation(len(raw.x_train))[: task.n_train]
    test = rng.permutation(len(raw.x_test))[: task.n_test]
    return raw.x_train[train], raw.labels_train[train], raw.x_test[test], raw.labels_test[test]


def _preprocess(task: Task, x_train: np.ndarray, x_test: np.ndarray,
                image_shape: tuple[int, ...] | None, x_pool: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...] | None, np.ndarray]:
    """Downsample, scale and project x_train and x_test, and x_pool (the bound's source sample)
    alike, with statistics from the training split only; x_pool is transformed on its own, so
    the splits' values do not depend on it."""
    pre = task.preprocess
    if pre.downsample > 1:
        if image_shape is None:
            raise SpecError(f"task {task.name!r}: preprocess.downsample = {pre.downsample} needs "
                            f"image data, but the {task.source.kind} data is flat features.")
        if pre.downsample > min(image_shape[1:]):
            raise SpecError(f"task {task.name!r}: preprocess.downsample = {pre.downsample} "
                            f"exceeds the image size {image_shape[1]} x {image_shape[2]}.")
        x_train, new_shape = _downsample(x_train, image_shape, pre.downsample)
        x_test, _ = _downsample(x_test, image_shape, pre.downsample)
        x_pool, _ = _downsample(x_pool, image_shape, pre.downsample)
        image_shape = new_shape
    if pre.scale == "standardize":
        mean, std = x_train.mean(0), x_train.std(0)
        std = np.where(std > 0, std, 1.0)  # constant features stay constant (at zero)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        x_pool = (x_pool - mean) / std
    elif pre.scale == "minmax":
        low, span = x_train.min(0), np.ptp(x_train, axis=0)
        span = np.where(span > 0, span, 1.0)
        x_train, x_test = (x_train - low) / span, (x_test - low) / span
        x_pool = (x_pool - low) / span
    if pre.pca_dim is not None:
        most = min(x_train.shape)
        if pre.pca_dim > most:
            raise SpecError(f"task {task.name!r}: preprocess.pca_dim = {pre.pca_dim}, but the "
                            f"training split ({x_train.shape[0]} points x {x_train.shape[1]} "
                            f"features) has at most {most} components. Lower pca_dim.")
        components = principal_components(x_train, pre.pca_dim)
        mean = x_train.mean(0)
        x_train, x_test = (x_train - mean) @ components.T, (x_test - mean) @ components.T
        x_pool = (x_pool - mean) @ components.T
        image_shape = None
    return x_train, x_test, image_shape, x_pool


def principal_components(x: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` principal directions of ``x`` (rows), as an (n, d) orthonormal array.

    Each direction's sign is fixed (its largest-magnitude entry is positive): SVD leaves it
    arbitrary, and a sign that changed between LAPACK builds would change the data.
    """
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    components = vt[:n]
    signs = np.sign(components[np.arange(n), np.abs(components).argmax(1)])
    return components * signs[:, None]


def _downsample(x: np.ndarray, image_shape: tuple[int, ...],
                factor: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Average ``factor`` x ``factor`` pixel blocks; rows and columns left over are dropped."""
    channels, height, width = image_shape
    h, w = height // factor, width // factor
    images = x.reshape(len(x), channels, height, width)[:, :, : h * factor, : w * factor]
    pooled = images.reshape(len(x), channels, h, factor, w, factor).mean(axis=(3, 5))
    return pooled.reshape(len(x), -1), (channels, h, w)


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _check_feature_values(task: Task, raw: RawData) -> None:
    """Every source's features, as read: finite, and small enough that squared distances
    between points stay finite in float64 (a kernel or a network would otherwise fail far
    from the cause, e.g. as a kernel matrix that is 'not positive definite')."""
    origin = raw.origin or f"the {task.source.kind} data"
    parts = [("the feature array", raw.x_train)] if raw.x_test is None else \
        [("X_train", raw.x_train), ("X_test", raw.x_test)]
    for name, x in parts:
        if not x.size or not np.issubdtype(x.dtype, np.floating):
            continue  # (integers, e.g. image bytes, are finite and far below the limit)
        if not np.isfinite(x).all():
            raise DataError(f"task {task.name!r}: {origin}: {name} contains NaN or infinite "
                            "values; clean them first.")
        largest = max(float(x.max()), -float(x.min())) / raw.divisor  # (no copy of x)
        if largest > MAX_FEATURE_MAGNITUDE:
            raise DataError(f"task {task.name!r}: {origin}: {name} holds a value of magnitude "
                            f"{largest:.3g}; squared distances between such points overflow "
                            "float64. Rescale the features (preprocess scale: standardize or "
                            "minmax) or fix the data.")


