"""Task sources on small files written here in the real formats, generators, preprocessing."""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib

import numpy as np
import pytest

from ibdb.core.errors import DataError, SpecError
from ibdb.data.datasets import pendulum_task, read_idx, read_png, synthetic_task
from ibdb.data.task import load_task
from ibdb.spec.sources import Task
from ibdb.stats.bound import intrinsic_dimension


def _task(source: dict, n_train: int = 10, n_test: int = 6, **kw) -> Task:
    return Task.model_validate({"name": "t", "source": source, "n_train": n_train,
                                "n_test": n_test, "eps": [0.1], **kw})


def _write_idx(path, array: np.ndarray, *, compress: bool = False) -> None:
    """IDX as LeCun documents it: 0, 0, type code 0x08 (ubyte), ndim, big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def _write_mnist(root, folder="MNIST", n_train=20, n_test=12, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        _write_idx(raw / (name + (".gz" if compress else "")), array, compress=compress)
    return arrays


def test_read_idx_plain_and_gzip(tmp_path):
    array = np.arange(24).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", array)
    _write_idx(tmp_path / "b.gz", array, compress=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), array)
    # a big-endian int32 IDX file (type code 0x0C)
    header = struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3)
    (tmp_path / "c").write_bytes(header + np.array([1, -2, 70000], ">i4").tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "c"), [1, -2, 70000])


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    _write_idx(tmp_path / "a", np.zeros((4, 4)))
    (tmp_path / "a").write_bytes((tmp_path / "a").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "a")
    (tmp_path / "b").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "b")


@pytest.mark.parametrize(("kind", "folder", "compress"), [
    ("mnist", "MNIST", False), ("fashion-mnist", "FashionMNIST", True),
])
def test_mnist_layouts_load_scaled_images(tmp_path, kind, folder, compress):
    arrays = _write_mnist(tmp_path / "data", folder, compress=compress)
    data = load_task(_task({"kind": kind, "root": "data"}), spec_dir=tmp_path)
    assert data.image_shape == (1, 28, 28) and data.x_train.shape == (10, 784)
    assert data.y_train.shape == (10, 10)
    originals = arrays["train-images-idx3-ubyte"].reshape(20, -1) / 255.0
    for row, label in zip(data.x_train, data.y_train.argmax(1), strict=True):
        (match,) = np.flatnonzero((originals == row).all(1))
        assert arrays["train-labels-idx1-ubyte"][match] == label
    tests = arrays["t10k-images-idx3-ubyte"].reshape(12, -1) / 255.0
    assert all((tests == row).all(1).any() for row in data.x_test)
    assert data.fingerprint.startswith(f"{kind}:")


def test_missing_mnist_file_is_named_with_how_to_get_it(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing .*MNIST/raw/t10k-labels-idx1-ubyte \(or "
                                        r"t10k-labels-idx1-ubyte.gz\)\. ibdb does not download"):
        load_task(_task({"kind": "mnist", "root": str(tmp_path)}), spec_dir=tmp_path)


def _write_cifar(root, n_per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(n_per_batch)]  # a list, as in the real files
        with (folder / name).open("wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels,
                         b"filenames": [b"x.png"] * n_per_batch}, handle, protocol=2)
        written[name] = (data, labels)
    return written


def test_cifar10_batches_load_as_channel_major_images(tmp_path):
    written = _write_cifar(tmp_path)
    data = load_task(_task({"kind": "cifar10", "root": "."}, n_train=20, n_test=4),
                     spec_dir=tmp_path)
    assert data.image_shape == (3, 32, 32) and data.x_train.shape == (20, 3072)
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]) / 255.0
    labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    got = {row.tobytes(): label for row, label in zip(data.x_train, data.y_train.argmax(1),
                                                      strict=True)}
    assert got == {row.tobytes(): label for row, label in zip(train, labels, strict=True)}
    # channel-major: the first 1024 values are the red plane, row by row
    image = data.x_test[0].reshape(3, 32, 32)
    np.testing.assert_array_equal(image[0].ravel(), data.x_test[0][:1024])


def test_cifar10_missing_batch_and_bad_pickle(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"missing .*cifar-10-batches-py/test_batch\. ibdb does "
                                        r"not download data: fetch and unpack"):
        load_task(_task({"kind": "cifar10", "root": str(tmp_path)}), spec_dir=tmp_path)
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as handle:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(DataError, match=r"expected \(n, 3072\)"):
        load_task(_task({"kind": "cifar10", "root": str(tmp_path)}), spec_dir=tmp_path)


def _write_parquet(path, x, labels, split=None):
    import duckdb

    with duckdb.connect() as con:
        columns = {f"x{i}": x[:, i] for i in range(x.shape[1])} | {"label": labels}
        if split is not None:
            columns["split"] = np.asarray(split)
        con.register("frame", columns)
        con.execute(f"COPY (SELECT * FROM frame) TO '{path}' (FORMAT parquet)")


@pytest.mark.parametrize("with_split", [False, True])
def test_parquet_features_labels_and_optional_split(tmp_path, with_split):
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(30, 3)), np.arange(30) % 3
    split = np.where(np.arange(30) < 20, "train", "test") if with_split else None
    _write_parquet(tmp_path / "t.parquet", x, labels, split)
    data = load_task(_task({"kind": "parquet", "path": "t.parquet"}), spec_dir=tmp_path)
    assert data.x_train.shape == (10, 3) and data.n_outputs == 3
    rows = {r.tobytes(): i for i, r in enumerate(x)}
    train_rows = [rows[r.tobytes()] for r in data.x_train]
    np.testing.assert_array_equal(labels[train_rows], data.y_train.argmax(1))
    if with_split:
        assert max(train_rows) < 20 and min(rows[r.tobytes()] for r in data.x_test) >= 20


def test_parquet_without_label_column(tmp_path):
    import duckdb

    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT 1.0 AS x0, 2 AS y) TO '{tmp_path / 'b.parquet'}' "
                    "(FORMAT parquet)")
    with pytest.raises(DataError, match="missing label"):
        load_task(_task({"kind": "parquet", "path": "b.parquet"}), spec_dir=tmp_path)


def test_synthetic_points_lie_on_an_m_dimensional_subspace():
    x, labels = synthetic_task(n_points=400, intrinsic_dim=3, ambient_dim=12, n_classes=4,
                               nonlinearity="none", teacher_width=16, seed=1)
    assert x.shape == (400, 12) and set(labels.tolist()) <= {0, 1, 2, 3}
    singular = np.linalg.svd(x - x.mean(0), compute_uv=False)
    assert singular[2] > 1.0 and singular[3] < 1e-10 * singular[0]
    assert len(set(labels.tolist())) >= 2


@pytest.mark.parametrize("m", [2, 6])
def test_synthetic_curved_manifold_has_the_asked_intrinsic_dimension(m):
    x, _ = synthetic_task(n_points=2000, intrinsic_dim=m, ambient_dim=20, n_classes=3,
                          nonlinearity="sin", teacher_width=8, seed=0)
    # Levina-Bickel is biased low in higher dimensions at this sample size; 25% is ample to
    # tell 2 from 6
    assert intrinsic_dimension(x) == pytest.approx(m, rel=0.25)


def test_synthetic_labels_are_a_function_of_the_latents():
    """Same seed, same latents: refitting the embedding's inverse recovers z, and a nearest
    neighbour in z space agrees with the labels (the teacher is smooth)."""
    x, labels = synthetic_task(n_points=1500, intrinsic_dim=2, ambient_dim=5, n_classes=3,
                               nonlinearity="none", teacher_width=8, seed=3)
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(1).fit(x[:1000], labels[:1000])
    assert (clf.predict(x[1000:]) == labels[1000:]).mean() > 0.9


def _closed_loop_cost(gain, s0, dt=1e-3, horizon=15.0):
    """J = int s^T s + u^2 dt of the linearised pendulum under u = -K s, by Euler steps."""
    a = np.array([[0.0, 1.0], [9.81, 0.0]])
    s, cost = np.array(s0, float), 0.0
    for _ in range(int(horizon / dt)):
        u = -gain @ s
        cost += (s @ s + u * u) * dt
        s = s + dt * (a @ s + np.array([0.0, u]))
    return cost


def test_pendulum_expert_is_the_optimal_linear_controller():
    states, actions, labels = pendulum_task(n_points=600, n_bins=4, angle_max_rad=0.05,
                                            rate_max_rad_s=0.05, torque_max=50.0, steps=30,
                                            dt_s=0.05, seed=0)
    assert states.shape == (600, 2) and actions.shape == (600,)
    gain, *_ = np.linalg.lstsq(states, -actions, rcond=None)  # unsaturated: u = -K s exactly
    np.testing.assert_allclose(states @ -gain, actions, atol=1e-9)
    # LQR (Q = I, R = 1) minimises the quadratic cost: any perturbed gain costs more
    best = _closed_loop_cost(gain, [0.1, 0.0])
    for delta in ([0.5, 0], [-0.5, 0], [0, 0.3], [0, -0.3]):
        assert _closed_loop_cost(gain + np.array(delta), [0.1, 0.0]) > best
    # equal-count bins, ordered by action
    assert np.bincount(labels).tolist() == [150] * 4
    assert all(actions[labels == c].max() <= actions[labels == c + 1].min() for c in range(3))


def test_pendulum_task_loads_with_saturated_torques():
    data = load_task(_task({"kind": "pendulum", "n_points": 300, "n_bins": 3,
                            "torque_max": 2.0}, n_train=100, n_test=50), spec_dir=".")
    assert data.x_train.shape == (100, 2) and data.n_outputs == 3
    assert data.fingerprint.startswith("pendulum:v1:")


def test_preprocess_classes_downsample_scale_and_pca(tmp_path):
    arrays = _write_mnist(tmp_path, n_train=40, n_test=20)
    plain = load_task(_task({"kind": "mnist", "root": "."}, n_train=8, n_test=4,
                            preprocess={"classes": [3, 1]}), spec_dir=tmp_path)
    assert plain.n_outputs == 2
    images = arrays["train-images-idx3-ubyte"] / 255.0
    for row, label in zip(plain.x_train, plain.y_train.argmax(1), strict=True):
        (match,) = np.flatnonzero((images.reshape(40, -1) == row).all(1))
        assert [3, 1][label] == arrays["train-labels-idx1-ubyte"][match]

    small = load_task(_task({"kind": "mnist", "root": "."}, n_train=8, n_test=4,
                            preprocess={"classes": [3, 1], "downsample": 3}), spec_dir=tmp_path)
    assert small.image_shape == (1, 9, 9)
    # an explicit 3 x 3 block mean of the same rows (27 of 28 rows and columns used)
    full = plain.x_train.reshape(8, 28, 28)[:, :27, :27]
    expected = np.array([[[full[i, 3 * r:3 * r + 3, 3 * c:3 * c + 3].mean() for c in range(9)]
                          for r in range(9)] for i in range(8)]).reshape(8, -1)
    np.testing.assert_allclose(small.x_train, expected, rtol=1e-12)
    assert small.fingerprint != plain.fingerprint

    scaled = load_task(_task({"kind": "digits"}, n_train=200, n_test=50,
                             preprocess={"scale": "standardize", "pca_dim": 5}), spec_dir=".")
    raw = load_task(_task({"kind": "digits"}, n_train=200, n_test=50), spec_dir=".")
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(raw.x_train)
    pca = PCA(5, svd_solver="full").fit(scaler.transform(raw.x_train))
    reference = pca.transform(scaler.transform(raw.x_test))
    # principal directions are defined up to sign
    signs = np.sign((scaled.x_test * reference).sum(0))
    np.testing.assert_allclose(scaled.x_test, reference * signs, atol=1e-8)
    assert scaled.image_shape is None and scaled.x_train.shape == (200, 5)


def test_preprocess_errors_name_field_and_value(tmp_path):
    with pytest.raises(SpecError, match=r"preprocess.classes names \[11\]"):
        load_task(_task({"kind": "digits"}, preprocess={"classes": [0, 11]}), spec_dir=".")
    with pytest.raises(SpecError, match="preprocess.downsample = 2 needs image data"):
        load_task(_task({"kind": "synthetic", "intrinsic_dim": 2, "ambient_dim": 4,
                         "n_points": 50}, preprocess={"downsample": 2}), spec_dir=".")
    with pytest.raises(SpecError, match="preprocess.pca_dim = 50, but the training split"):
        load_task(_task({"kind": "digits"}, preprocess={"pca_dim": 50}), spec_dir=".")
    with pytest.raises(ValueError, match="intrinsic_dim = 5 exceeds ambient_dim = 3"):
        _task({"kind": "synthetic", "intrinsic_dim": 5, "ambient_dim": 3})


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _write_png(path, image: np.ndarray, *, depth: int = 8, colour: int = 0) -> None:
    """A PNG as the specification defines it; row r uses filter type r % 5, so that every
    filter is exercised. ``image``: (h, w) grey or (h, w, c) integer samples < 2^depth."""
    h, w = image.shape[:2]
    samples = image.reshape(h, -1).astype(np.int64)
    if depth < 8:  # pack samples most significant bit first, rows padded to whole bytes
        bits = ((samples[..., None] >> np.arange(depth - 1, -1, -1)) & 1).reshape(h, -1)
        rows = np.packbits(bits.astype(np.uint8), axis=1).astype(np.int64)
    else:
        rows = samples
    bpp = max(1, (1 if image.ndim == 2 else image.shape[2]) * depth // 8)
    out = bytearray()
    prior = np.zeros(rows.shape[1], dtype=np.int64)
    for r, row in enumerate(rows):
        kind = r % 5
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        corner = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
        guess = {0: np.zeros_like(row), 1: left, 2: prior, 3: (left + prior) // 2,
                 4: np.array([_paeth(a, b, c) for a, b, c in zip(left, prior, corner,
                                                                  strict=True)])}[kind]
        out.append(kind)
        out += bytes(((row - guess) % 256).astype(np.uint8))
        prior = row
    header = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(bytes(out)))
                     + _png_chunk(b"IEND", b""))


@pytest.mark.parametrize(("depth", "colour", "channels"), [
    (1, 0, 0), (4, 0, 0), (8, 0, 0), (8, 2, 3), (8, 6, 4),
])
def test_read_png_every_filter_and_depth(tmp_path, depth, colour, channels):
    rng = np.random.default_rng(depth + colour)
    shape = (7, 13, channels) if channels else (7, 13)
    image = rng.integers(0, 2**depth, size=shape)
    _write_png(tmp_path / "a.png", image, depth=depth, colour=colour)
    got = read_png(tmp_path / "a.png")
    values = image / (2**depth - 1)
    expected = values if not channels else values[..., :3].mean(axis=2)
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def _write_omniglot(root, n_alphabets=2, n_characters=3, n_drawings=4, size=9):
    rng = np.random.default_rng(0)
    folder = root / "omniglot-py" / "images_background"
    for a in range(n_alphabets):
        for c in range(n_characters):
            character = folder / f"Alphabet_{a}" / f"character{c + 1:02d}"
            character.mkdir(parents=True)
            for d in range(n_drawings):
                # the drawing's id is written into its first pixels so the test can find it
                image = rng.integers(0, 2, size=(size, size))
                image[0, :4] = [a, c // 2, c % 2, 1]
                _write_png(character / f"{d:02d}.png", image, depth=1)


def test_omniglot_episode_is_n_way_k_shot(tmp_path):
    _write_omniglot(tmp_path)
    source = {"kind": "omniglot", "root": ".", "n_way": 3, "k_shot": 1, "episode_seed": 4}
    data = load_task(_task(source, n_train=3, n_test=9), spec_dir=tmp_path)
    assert data.image_shape == (1, 9, 9) and data.n_outputs == 3
    assert sorted(data.y_train.argmax(1).tolist()) == [0, 1, 2]
    # every test drawing's character (read from its pixels) is the one its label names
    ident = {}
    for x, y in [(data.x_train, data.y_train), (data.x_test, data.y_test)]:
        for row, label in zip(x, y.argmax(1), strict=True):
            ident.setdefault(tuple(row[:3]), set()).add(int(label))
    assert len(ident) == 3 and all(len(labels) == 1 for labels in ident.values())
    again = load_task(_task({**source, "episode_seed": 5}, n_train=3, n_test=9),
                      spec_dir=tmp_path)
    assert again.fingerprint != data.fingerprint


def test_omniglot_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"holds 0 character folders, fewer than n_way = 5\. "
                                        r"ibdb does not download data"):
        load_task(_task({"kind": "omniglot", "root": "."}, n_train=5, n_test=5),
                  spec_dir=tmp_path)


def test_synthetic_embedding_keeps_distances():
    """x = A z with orthonormal columns: the Gram matrix of x is that of the latents, which
    the generator draws first from default_rng(seed)."""
    x, _ = synthetic_task(n_points=50, intrinsic_dim=3, ambient_dim=7, n_classes=2,
                          nonlinearity="none", teacher_width=4, seed=12)
    z = np.random.default_rng(12).uniform(-1.0, 1.0, size=(50, 3))
    np.testing.assert_allclose(x @ x.T, z @ z.T, atol=1e-12)


def test_a_normalised_teacher_keeps_its_scale_across_intrinsic_dimension():
    """teacher_scale: normalised gives the teacher's pre-activations W z unit variance whatever
    m (raw: m / 3). Recomputed here from the same seeded draws the generator makes: the
    generator's labels equal the argmax of V tanh(W z + c), centred, with W scaled by
    sqrt(3 / m); and the default leaves the data and the source's dump as they were."""
    from ibdb.spec.sources import SyntheticSource

    for m in (2, 16):
        kw = dict(n_points=3000, intrinsic_dim=m, ambient_dim=20, n_classes=4,
                  nonlinearity="none", teacher_width=32, seed=3)
        x, labels = synthetic_task(**kw, teacher_scale="normalised")
        rng = np.random.default_rng(3)
        z = rng.uniform(-1.0, 1.0, size=(3000, m))
        rng.normal(size=(20, m))  # the embedding's draw
        w = rng.normal(size=(32, m)) * np.sqrt(3.0 / m)
        c, v = rng.normal(size=32), rng.normal(size=(4, 32))
        pre = z @ w.T
        assert abs(pre.var() - 1.0) < 0.1  # unit variance per hidden unit, any m
        scores = np.tanh(pre + c) @ v.T
        np.testing.assert_array_equal(labels, (scores - scores.mean(axis=0)).argmax(axis=1))
        raw_x, _ = synthetic_task(**kw)
        np.testing.assert_array_equal(raw_x, x)  # the points are the same; only labels differ
    src = {"kind": "synthetic", "intrinsic_dim": 4, "ambient_dim": 8}
    # the data's name (its fingerprint, and the run id) is what it was before teacher_scale
    assert "teacher_scale" not in SyntheticSource.model_validate(src).identity()
    assert SyntheticSource.model_validate({**src, "teacher_scale": "normalised"}).identity()[
        "teacher_scale"] == "normalised"
