"""Readers of public datasets' on-disk formats and in-process task generators.

Readers take a local folder (torchvision's layout) and never download: a missing file is a
:class:`DataError` that names it and says how to get it. Generators (``synthetic``, ``pendulum``)
are pure functions of their parameters. Everything returns plain NumPy arrays:
``(x_train, labels_train, x_test, labels_test)`` with images as ``(n, channels, height, width)``.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import zlib
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

from ibdb.core.errors import DataError
from ibdb.core.memory import require_memory

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def synthetic_bytes(*, n_points: int, intrinsic_dim: int, ambient_dim: int, n_classes: int,
                    teacher_width: int, **_: object) -> int:
    """Rough peak bytes of :func:`synthetic_task` and of the task built from it: the points
    (n x d float64) about four times (drawn, copied to float64 by the task, split, sampled
    for the pool), the d x m Gaussian matrix, its Q and the basis, the latents and teacher
    activations, and the one-hot targets (n x classes)."""
    n, d, m = n_points, ambient_dim, intrinsic_dim
    return 8 * (4 * n * d + 3 * d * m + n * (3 * m + 2 * teacher_width + 3 * n_classes))


def pendulum_bytes(*, n_points: int, n_bins: int, steps: int, **_: object) -> int:
    """Rough peak bytes of :func:`pendulum_task` and its task: the visited states (n x 2
    float64) and the RK4 stages (episodes x 2, ten of them), actions, the n_bins quantile
    edges and the one-hot targets (n x n_bins)."""
    episodes = -(-n_points // steps)
    return 8 * (6 * n_points * 2 + 10 * episodes * 2 + 3 * n_points + 2 * n_bins
                + n_points * n_bins)

# torchvision's folder name and the dataset's home page, per IDX dataset.
IDX_DATASETS = {
    "mnist": ("MNIST", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("FashionMNIST", "https://github.com/zalandoresearch/fashion-mnist"),
}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

# IDX type codes (the third byte of the magic number) -> big-endian NumPy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), plain or gzip-compressed, as a NumPy array.

    Format: two zero bytes, a type code, the number of dimensions, one big-endian uint32 size
    per dimension, then the values in C order, big-endian.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'none'}).")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header promises shape {shape} ({expected} bytes) but the "
                        f"file holds {len(raw)} bytes; it is truncated or corrupt.")
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def idx_files(root: Path, dataset: str) -> list[Path]:
    """The four IDX files of ``dataset`` under ``root`` (each plain or ``.gz``), in
    IDX_FILES order; a missing one is a DataError that says where it belongs."""
    folder, home = IDX_DATASETS[dataset]
    raw = root / folder / "raw"
    found = []
    for name in IDX_FILES:
        candidates = [raw / name, raw / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(
                f"{dataset}: missing {candidates[0]} (or {candidates[1].name}). ibdb does not "
                f"download data: fetch the four IDX files from {home} (or run torchvision's "
                f"datasets.{folder}(root={str(root)!r}, download=True) once) so that they lie "
                f"in {raw}.")
        found.append(path)
    return found


def load_idx_dataset(root: Path, dataset: str) -> Arrays:
    """MNIST or Fashion-MNIST from torchvision's layout: images (n, 1, 28, 28) as uint8."""
    paths = idx_files(root, dataset)
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for images, labels, (ip, lp) in ((x_train, y_train, paths[:2]), (x_test, y_test, paths[2:])):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{dataset}: {ip} holds shape {images.shape} and {lp} shape "
                            f"{labels.shape}; expected (n, h, w) images and n labels.")
    return x_train[:, None], y_train.astype(np.int64), x_test[:, None], y_test.astype(np.int64)


def load_cifar10(root: Path) -> Arrays:
    """CIFAR-10's python pickles (``<root>/cifar-10-batches-py/data_batch_1..5, test_batch``):
    each a dict with ``b'data'`` (n, 3072) uint8, channel-major 32 x 32, and ``b'labels'``."""
    folder = root / CIFAR10_FOLDER
    batches = []
    for name in CIFAR10_FILES:
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"cifar10: missing {path}. ibdb does not download data: fetch and unpack "
                "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html (or run "
                f"torchvision's datasets.CIFAR10(root={str(root)!r}, download=True) once) so "
                f"that {CIFAR10_FOLDER}/ lies in {root}.")
        batches.append(_cifar_batch(path))
    x_train = np.concatenate([b[0] for b in batches[:-1]])
    y_train = np.concatenate([b[1] for b in batches[:-1]])
    return x_train, y_train, *batches[-1]


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as handle:
            # The official files are Python 2 pickles of dicts of NumPy arrays and lists; a
            # pickle can run code, so read only files you trust (the same holds for torchvision).
            batch = pickle.load(handle, encoding="bytes")
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 batch pickle with b'data' and "
                        f"b'labels' ({type(exc).__name__}: {exc}).") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"cifar10: {path} holds data of shape {data.shape} and {len(labels)} "
                        "labels; expected (n, 3072) and n labels.")
    return data.reshape(-1, 3, 32, 32), labels


def load_parquet(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features, labels and the optional ``split`` column of a Parquet file read with DuckDB.

    Feature columns are every column whose name starts with ``x`` or ``X`` (in file order);
    ``label`` holds integer classes; ``split``, when present, says ``train`` or ``test``.
    """
    import duckdb  # the store's engine; imported here so that other loaders do not pay for it

    try:
        with duckdb.connect() as con:
            rel = con.read_parquet(str(path))
            columns = rel.columns
            features = [c for c in columns if c[:1] in {"x", "X"}]
            missing = [name for name, ok in (("label", "label" in columns),
                                             ("x* feature columns", bool(features))) if not ok]
            if missing:
                raise DataError(f"{path}: missing {' and '.join(missing)} (columns: "
                                f"{', '.join(columns)}). Write one column per feature named "
                                "x0, x1, ... and an integer label column.")
            quoted = ", ".join(f'"{c}"' for c in features)
            rows = con.execute(f"SELECT {quoted} FROM read_parquet(?)", [str(path)]).fetchnumpy()
            labels = con.execute('SELECT "label" FROM read_parquet(?)', [str(path)]).fetchnumpy()
            split = (con.execute('SELECT "split" FROM read_parquet(?)', [str(path)]).fetchnumpy()
                     if "split" in columns else None)
    except duckdb.Error as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}).") from None
    x = np.column_stack([np.asarray(rows[c], dtype=np.float64) for c in features])
    label = np.asarray(labels["label"])
    if not np.issubdtype(label.dtype, np.integer) or (label < 0).any():
        raise DataError(f"{path}: column label must hold non-negative integers; got "
                        f"{label.dtype}.")
    split_values = None if split is None else np.asarray(split["split"]).astype(str)
    if split_values is not None and not np.isin(split_values, ("train", "test")).all():
        bad = sorted(set(split_values) - {"train", "test"})[:3]
        raise DataError(f"{path}: column split must hold 'train' or 'test'; found {bad}.")
    return x, label.astype(np.int64), split_values


def synthetic_task(*, n_points: int, intrinsic_dim: int, ambient_dim: int, n_classes: int,
                   nonlinearity: str, teacher_width: int, seed: int,
                   teacher_scale: str = "raw") -> tuple[np.ndarray, np.ndarray]:
    """Points on an m-dimensional manifold in d dimensions, labelled by a random teacher.

    Latents ``z ~ U[-1, 1]^m``; embedding ``x = A z`` with ``A`` a random d x m matrix with
    orthonormal columns (so distances on the manifold are kept), or ``x = A sin(pi z / 2)`` (a
    curved image of the same cube, still m-dimensional) for ``nonlinearity: sin``. Labels are the
    argmax over ``n_classes`` outputs of a random one-hidden-layer tanh network of the latents,
    ``V tanh(W z + c)`` with standard normal ``W`` (teacher_width x m), ``c`` and ``V``, each
    output centred on its mean over the drawn points (without it one class can take most
    points): so the label depends on the m intrinsic coordinates only. ``teacher_scale:
    normalised`` scales ``W`` by sqrt(3 / m), so that ``W z`` has unit variance per hidden unit
    whatever m (``raw``: variance m / 3, a sharper teacher in more dimensions).
    """
    require_memory(
        synthetic_bytes(n_points=n_points, intrinsic_dim=intrinsic_dim, ambient_dim=ambient_dim,
                        n_classes=n_classes, teacher_width=teacher_width),
        f"synthetic data of n_points = {n_points}, ambient_dim = {ambient_dim}, intrinsic_dim "
        f"= {intrinsic_dim}, n_classes = {n_classes}, teacher_width = {teacher_width} "
        "(estimate: 8 bytes x (4 n d + 3 d m + n (3 m + 2 width + 3 classes)))",
        "Lower n_points or ambient_dim.")
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1.0, 1.0, size=(n_points, intrinsic_dim))
    # Q of a Gaussian matrix's QR, signs fixed by R's diagonal: a uniformly random d x m map
    # with orthonormal columns (Mezzadri 2007), built here so the data do not depend on how
    # a library happens to draw one.
    q, r = np.linalg.qr(rng.normal(size=(ambient_dim, intrinsic_dim)))
    basis = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    latent = np.sin(np.pi * z / 2.0) if nonlinearity == "sin" else z
    x = latent @ basis.T
    w = rng.normal(size=(teacher_width, intrinsic_dim))
    if teacher_scale == "normalised":
        w *= np.sqrt(3.0 / intrinsic_dim)
    c = rng.normal(size=teacher_width)
    v = rng.normal(size=(n_classes, teacher_width))
    scores = np.tanh(z @ w.T + c) @ v.T
    labels = (scores - scores.mean(axis=0)).argmax(axis=1)
    return x, labels.astype(np.int64)


# Pendulum constants (SI units): gravity, rod length, bob mass
_G, _LENGTH, _MASS = 9.81, 1.0, 1.0


def pendulum_task(*, n_points: int, n_bins: int, angle_max_rad: float, rate_max_rad_s: float,
                  torque_max: float, steps: int, dt_s: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States of an inverted pendulum balanced by an LQR expert, and the expert's actions.

    Dynamics: ``theta'' = (g / l) sin(theta) + u / (m l^2)`` with theta = 0 upright. The expert is
    the LQR controller of the dynamics linearised at the top (Q = I, R = 1), ``u = -K s``,
    saturated at +-torque_max. Episodes start uniformly in [-angle_max, angle_max] x
    [-rate_max, rate_max] and run ``steps`` RK4 steps of ``dt_s`` under the expert; every visited
    state (theta, theta') is a point. Returns states (n, 2), the actions (n,), and class labels:
    the action's bin among ``n_bins`` equal-count bins (quantiles of the actions drawn), so the
    regression target becomes a k-class task the rest of ibdb measures with one-hot targets.
    """
    require_memory(
        pendulum_bytes(n_points=n_points, n_bins=n_bins, steps=steps),
        f"pendulum data of n_points = {n_points}, n_bins = {n_bins} (estimate: 8 bytes x "
        "(15 n + 2 bins + n bins))", "Lower n_points or n_bins.")
    from scipy.linalg import solve_continuous_are  # only this generator needs scipy

    a = np.array([[0.0, 1.0], [_G / _LENGTH, 0.0]])
    b = np.array([[0.0], [1.0 / (_MASS * _LENGTH**2)]])
    riccati = solve_continuous_are(a, b, np.eye(2), np.eye(1))
    gain = (b.T @ riccati).ravel()  # R^-1 B^T P with R = 1

    def control(s: np.ndarray) -> np.ndarray:
        return np.clip(-(s @ gain), -torque_max, torque_max)

    def deriv(s: np.ndarray) -> np.ndarray:
        u = control(s)
        acc = _G / _LENGTH * np.sin(s[:, 0]) + u / (_MASS * _LENGTH**2)
        return np.column_stack([s[:, 1], acc])

    rng = np.random.default_rng(seed)
    n_episodes = -(-n_points // steps)
    s = rng.uniform([-angle_max_rad, -rate_max_rad_s], [angle_max_rad, rate_max_rad_s],
                    size=(n_episodes, 2))
    visited = []
    for _ in range(steps):
        visited.append(s)
        k1 = deriv(s)
        k2 = deriv(s + 0.5 * dt_s * k1)
        k3 = deriv(s + 0.5 * dt_s * k2)
        k4 = deriv(s + dt_s * k3)
        s = s + dt_s / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    # episode-major order, so that a prefix holds whole episodes
    states = np.stack(visited, axis=1).reshape(-1, 2)[:n_points]
    actions = control(states)
    edges = np.quantile(actions, np.linspace(0, 1, n_bins + 1)[1:-1])
    labels = np.searchsorted(edges, actions, side="right")
    return states, actions, labels.astype(np.int64)


OMNIGLOT_FOLDER = "omniglot-py"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (no palettes)


def read_png(path: Path) -> np.ndarray:
    """A non-interlaced greyscale or RGB(A) PNG (bit depth 1-8 for grey, 8 for colour) as a
    float64 (height, width) array in [0, 1]: colour is averaged to grey, alpha dropped."""
    raw = path.read_bytes()
    if raw[:8] != _PNG_SIGNATURE:
        raise DataError(f"{path}: not a PNG file.")
    pos, header, idat = 8, None, bytearray()
    while pos + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body = raw[pos + 8:pos + 8 + length]
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise DataError(f"{path}: PNG without an IHDR chunk.")
    width, height, depth, colour, _, _, interlace = header
    if colour not in _PNG_CHANNELS or interlace or (colour != 0 and depth != 8) or depth > 8:
        raise DataError(f"{path}: unsupported PNG (colour type {colour}, bit depth {depth}, "
                        f"interlace {interlace}); ibdb reads non-interlaced grey or RGB(A) "
                        "images of at most 8 bits per sample.")
    channels = _PNG_CHANNELS[colour]
    try:
        data = zlib.decompress(bytes(idat))
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt PNG image data ({exc}).") from None
    stride = (width * channels * depth + 7) // 8
    if len(data) != height * (stride + 1):
        raise DataError(f"{path}: PNG image data holds {len(data)} bytes, expected "
                        f"{height * (stride + 1)}; the file is truncated or corrupt.")
    rows = _unfilter(np.frombuffer(data, np.uint8).reshape(height, stride + 1),
                     max(1, channels * depth // 8), path)
    if depth < 8:  # unpack 1, 2 or 4-bit samples, most significant first
        bits = np.unpackbits(rows, axis=1).reshape(height, -1, depth)
        weights = 1 << np.arange(depth - 1, -1, -1)
        rows = (bits * weights).sum(axis=2)[:, : width * channels]
    pixels = rows.reshape(height, width, channels).astype(np.float64) / (2**depth - 1)
    grey = pixels[..., : 3 if channels >= 3 else 1]  # drop alpha
    return grey.mean(axis=2)


def _unfilter(filtered: np.ndarray, bpp: int, path: Path) -> np.ndarray:
    """Undo PNG's per-row filters (0 none, 1 sub, 2 up, 3 average, 4 Paeth) on uint8 rows."""
    height, width = filtered.shape[0], filtered.shape[1] - 1
    out = np.zeros((height, width), dtype=np.int64)
    prior = np.zeros(width, dtype=np.int64)
    for r in range(height):
        kind, line = int(filtered[r, 0]), filtered[r, 1:].astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + prior) % 256
        elif kind in (1, 3, 4):
            # these predict from the byte bpp to the left, so they go byte by byte
            row = np.zeros(width, dtype=np.int64)
            for i in range(width):
                left = row[i - bpp] if i >= bpp else 0
                up, corner = prior[i], (prior[i - bpp] if i >= bpp else 0)
                if kind == 1:
                    guess = left
                elif kind == 3:
                    guess = (left + up) // 2
                else:
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    guess = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                row[i] = (line[i] + guess) % 256
        else:
            raise DataError(f"{path}: unknown PNG filter type {kind} in row {r}.")
        out[r], prior = row, row
    return out.astype(np.uint8)


def omniglot_episode(root: Path, *, background: bool, n_way: int, k_shot: int,
                     episode_seed: int) -> tuple[Arrays, str]:
    """One N-way K-shot episode from torchvision's Omniglot layout
    ``<root>/omniglot-py/images_background/<alphabet>/<character>/*.png`` (``images_evaluation``
    when ``background`` is false): ``n_way`` characters drawn at random from all alphabets,
    ``k_shot`` of each character's drawings for training, the rest for testing. Images are
    1 x 105 x 105 in [0, 1] (the files' own values: white paper is 1). Returns the arrays and
    the sha256 of the episode's files and draw."""
    folder = root / OMNIGLOT_FOLDER / ("images_background" if background else
                                       "images_evaluation")
    characters = sorted(p for p in folder.glob("*/*") if p.is_dir()) if folder.is_dir() else []
    if len(characters) < n_way:
        raise DataError(
            f"omniglot: {folder} holds {len(characters)} character folders, fewer than n_way = "
            f"{n_way}. ibdb does not download data: fetch and unzip {folder.name}.zip from "
            "https://github.com/brendenlake/omniglot (or run torchvision's datasets.Omniglot("
            f"root={str(root)!r}, download=True) once) so that {OMNIGLOT_FOLDER}/ lies in "
            f"{root}.")
    rng = np.random.default_rng(episode_seed)
    chosen = [characters[i] for i in sorted(rng.choice(len(characters), n_way, replace=False))]
    digest = hashlib.sha256(f"{n_way}/{k_shot}/{episode_seed}".encode())
    parts: list[list] = [[], [], [], []]
    for label, character in enumerate(chosen):
        files = sorted(character.glob("*.png"))
        if len(files) <= k_shot:
            raise DataError(f"omniglot: {character} holds {len(files)} drawings; k_shot = "
                            f"{k_shot} leaves none to test on.")
        order = rng.permutation(len(files))
        for slot, indices in ((0, order[:k_shot]), (2, order[k_shot:])):
            for i in indices:
                digest.update(files[i].read_bytes())
                parts[slot].append(read_png(files[i])[None])
                parts[slot + 1].append(label)
    sizes = sorted({image.shape[1:] for image in parts[0] + parts[2]})
    if len(sizes) != 1:
        raise DataError(f"omniglot: the episode's images under {folder} differ in size: "
                        f"{sizes[:3]}.")
    x_train, x_test = (np.stack(parts[i]) for i in (0, 2))
    labels_train, labels_test = (np.asarray(parts[i], dtype=np.int64) for i in (1, 3))
    return (x_train, labels_train, x_test, labels_test), digest.hexdigest()


# -- MNIST-1D: generated by the mnist1d package's own generator, offline ------------------------

MNIST1D_INSTALL = "pip install mnist1d"


def mnist1d_version() -> str:
    """The installed mnist1d package's version; a DataError saying how to install it if absent."""
    _mnist1d_generator()
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist1d")
    except PackageNotFoundError:  # importable but not installed as a distribution
        return "unknown"


def _mnist1d_generator() -> ModuleType:
    """The mnist1d package's generator module, imported on demand (it imports matplotlib)."""
    try:
        import mnist1d.data as generator
    except ImportError as exc:
        raise DataError(f"the mnist1d source needs the mnist1d package, which is not installed "
                        f"({exc}). Install it: `{MNIST1D_INSTALL}`.") from None
    return generator


def mnist1d_args(*, seed: int, num_samples: int, train_split: float, final_seq_length: int,
                 corr_noise_scale: float, iid_noise_scale: float,
                 shuffle_seq: bool) -> dict[str, Any]:
    """The generator's settings: the package's standard ones with the source's fields in place
    (its ``url``, used only by its download path, is left out)."""
    args = dict(_mnist1d_generator().get_dataset_args(as_dict=True))
    args.pop("url", None)
    args.update(seed=seed, num_samples=num_samples, train_split=train_split,
                final_seq_length=final_seq_length, corr_noise_scale=corr_noise_scale,
                iid_noise_scale=iid_noise_scale, shuffle_seq=shuffle_seq)
    return args


def mnist1d_task(**params: Any) -> Arrays:
    """MNIST-1D as ``(x_train, labels_train, x_test, labels_test)``, signals of shape
    (n, 1, 1, final_seq_length), from the mnist1d package's ``make_dataset`` (called directly:
    its ``get_dataset`` would try a download and write a pickle). The generator seeds NumPy's
    and Python's global random state; both are restored afterwards, so loading a task changes
    no other code's random numbers."""
    import random

    generator = _mnist1d_generator()
    args = mnist1d_args(**params)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = generator.make_dataset(SimpleNamespace(**args))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    length = int(args["final_seq_length"])
    return (np.asarray(data["x"], dtype=np.float64).reshape(-1, 1, 1, length),
            np.asarray(data["y"], dtype=np.int64),
            np.asarray(data["x_test"], dtype=np.float64).reshape(-1, 1, 1, length),
            np.asarray(data["y_test"], dtype=np.int64))
