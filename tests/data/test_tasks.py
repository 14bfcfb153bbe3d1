"""Task data loading: digits, the user's npz arrays, and clear errors for bad data."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ibdb.core.errors import DataError, SpecError
from ibdb.data.task import load_task
from ibdb.spec.sources import Task

from conftest import make_npz


def _task(**kw) -> Task:
    base = {"name": "t", "source": {"kind": "npz", "path": "d.npz"}, "n_train": 10,
            "n_test": 8, "eps": [0.1]}
    base.update(kw)
    return Task.model_validate(base)


def test_digits_split_scaled_one_hot_and_disjoint():
    data = load_task(_task(source={"kind": "digits"}, n_train=100, n_test=50, split_seed=3),
                     spec_dir=".")
    assert data.x_train.shape == (100, 64) and data.x_test.shape == (50, 64)
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1 and data.x_train.max() > 0.9
    assert data.y_train.shape == (100, 10)
    np.testing.assert_array_equal(data.y_train.sum(1), 1)
    np.testing.assert_array_equal(data.y_test.argmax(1), data.labels_test)
    train_rows = {r.tobytes() for r in data.x_train}
    assert sum(r.tobytes() in train_rows for r in data.x_test) <= 2  # digits has a few duplicates
    again = load_task(_task(source={"kind": "digits"}, n_train=100, n_test=50, split_seed=3),
                      spec_dir=".")
    np.testing.assert_array_equal(again.x_test, data.x_test)


def test_digits_file_equals_scikit_learns_loader():
    from sklearn.datasets import load_digits

    from ibdb.data.sources import _load_digits

    x, labels, _ = _load_digits()
    bunch = load_digits()
    np.testing.assert_array_equal(x, bunch.data / 16.0)
    np.testing.assert_array_equal(labels, bunch.target)


def test_digits_too_many_points():
    with pytest.raises(SpecError, match=r"n_train \+ n_test = 1500 \+ 400 = 1900, but the "
                                        r"digits data has only 1797"):
        load_task(_task(source={"kind": "digits"}, n_train=1500, n_test=400), spec_dir=".")


@pytest.mark.parametrize("one_hot", [False, True])
def test_npz_labels_integer_or_one_hot(tmp_path, one_hot):
    make_npz(tmp_path / "d.npz", one_hot=one_hot, n_classes=4)
    data = load_task(_task(), spec_dir=tmp_path)
    assert data.y_train.shape == (10, 4) and data.n_outputs == 4
    assert data.fingerprint.startswith("npz:")


def test_npz_missing_arrays_named(tmp_path):
    np.savez(tmp_path / "d.npz", X_train=np.zeros((3, 2)), y_train=np.zeros(3, int))
    with pytest.raises(DataError, match="missing arrays X_test, y_test"):
        load_task(_task(), spec_dir=tmp_path)


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"source.path '.*d.npz': no such file"):
        load_task(_task(), spec_dir=tmp_path)


def test_npz_not_an_npz(tmp_path):
    (tmp_path / "d.npz").write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_task(_task(), spec_dir=tmp_path)


def test_npz_n_train_beyond_data(tmp_path):
    make_npz(tmp_path / "d.npz", n_train=6)
    with pytest.raises(SpecError, match="n_train = 10, but .* holds only 6 train examples"):
        load_task(_task(), spec_dir=tmp_path)


def test_npz_float_labels_rejected(tmp_path):
    np.savez(tmp_path / "d.npz", X_train=np.zeros((12, 2)), y_train=np.full(12, 0.5),
             X_test=np.zeros((9, 2)), y_test=np.zeros(9, int))
    with pytest.raises(DataError, match="y_train must hold non-negative integer class labels"):
        load_task(_task(), spec_dir=tmp_path)


def test_digits_keep_their_image_shape():
    from sklearn.datasets import load_digits

    data = load_task(_task(source={"kind": "digits"}, n_train=50, n_test=20), spec_dir=".")
    assert data.image_shape == (1, 8, 8) and data.x_train.shape == (50, 64)
    # each flat row is the 8x8 image read row by row, as scikit-learn's `images` holds it
    images = load_digits().images / 16.0
    for row in data.x_test[:5]:
        image = row.reshape(data.image_shape)[0]
        assert any(np.array_equal(image, candidate) for candidate in images)


@pytest.mark.parametrize(("shape", "image_shape"), [
    ((5,), None), ((4, 3), (1, 4, 3)), ((2, 3, 3), (2, 3, 3)), ((2, 2, 2, 2), None),
])
def test_npz_image_shape_from_the_arrays(tmp_path, shape, image_shape):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X_train=rng.normal(size=(12, *shape)),
             y_train=np.arange(12) % 3, X_test=rng.normal(size=(9, *shape)),
             y_test=np.arange(9) % 3)
    data = load_task(_task(), spec_dir=tmp_path)
    assert data.image_shape == image_shape
    features = int(np.prod(shape))
    assert data.x_train.shape == (10, features) and data.x_train.dtype == np.float64
    # the flat rows are the examples flattened in C order, so reshaping restores them
    with np.load(tmp_path / "d.npz") as npz:
        originals = npz["X_train"].reshape(12, -1)
    assert all(any(np.array_equal(row, o) for o in originals) for row in data.x_train)


def test_npz_train_and_test_example_shapes_must_match(tmp_path):
    np.savez(tmp_path / "d.npz", X_train=np.zeros((12, 4, 4)), y_train=np.arange(12) % 3,
             X_test=np.zeros((9, 16)), y_test=np.arange(9) % 3)
    with pytest.raises(DataError, match=r"X_train's examples have shape \(4, 4\) but X_test's "
                                        r"have \(16,\)"):
        load_task(_task(), spec_dir=tmp_path)


def test_fingerprints_without_preprocessing_are_unchanged(tmp_path):
    # run ids hash the fingerprint: tasks written before preprocessing existed keep theirs
    digits = load_task(_task(source={"kind": "digits"}), spec_dir=".")
    assert digits.fingerprint == "digits:sklearn-8x8"
    import hashlib

    make_npz(tmp_path / "d.npz")
    npz = load_task(_task(), spec_dir=tmp_path)
    content = (tmp_path / "d.npz").read_bytes()
    assert npz.fingerprint == "npz:" + hashlib.sha256(content).hexdigest()
    scaled = load_task(_task(preprocess={"scale": "minmax"}), spec_dir=tmp_path)
    assert scaled.fingerprint.startswith(npz.fingerprint + "|preprocess:")
    assert scaled.x_train.min() == 0 and scaled.x_train.max() == 1


def test_npz_class_subset_is_taken_before_the_split(tmp_path):
    make_npz(tmp_path / "d.npz", n_train=40, n_test=30, n_classes=4)
    data = load_task(_task(n_train=12, n_test=8, preprocess={"classes": [2, 0]}),
                     spec_dir=tmp_path)
    assert data.x_train.shape[0] == 12 and data.n_outputs == 2
    with np.load(tmp_path / "d.npz") as npz:
        x, y = npz["X_train"], npz["y_train"]
    for row, label in zip(data.x_train, data.y_train.argmax(1), strict=True):
        (match,) = np.flatnonzero((x == row).all(1))
        assert [2, 0][label] == y[match]


def test_a_shared_test_set_is_the_same_whatever_n_train():
    """test_set: shared takes the test points first from the split permutation: tasks that
    differ only in n_train test on identical points and their training sets are nested; the
    default (after_train) tests each on the points after its own training set. The default is
    left out of the dump, so older tasks keep their run ids."""
    def task(n_train: int, test_set: str | None = None) -> Task:
        extra = {} if test_set is None else {"test_set": test_set}
        return Task.model_validate({"name": "d", "source": {"kind": "digits"},
                                    "n_train": n_train, "n_test": 200, "eps": [0.5], **extra})

    small, large = (load_task(task(n, "shared"), spec_dir=Path(".")) for n in (100, 400))
    np.testing.assert_array_equal(small.x_test, large.x_test)
    np.testing.assert_array_equal(small.labels_test, large.labels_test)
    np.testing.assert_array_equal(small.x_train, large.x_train[:100])  # nested
    shared_rows = {r.tobytes() for r in large.x_test}
    assert not any(r.tobytes() in shared_rows for r in large.x_train)  # disjoint
    a, b = (load_task(task(n), spec_dir=Path(".")) for n in (100, 400))
    assert not np.array_equal(a.x_test, b.x_test)  # the default: each after its training set
    # the default leaves the identity (and run id) as it was before test_set; shared enters it
    assert "test_set" not in task(100).identity("f") and "test_set" not in \
        task(100, "after_train").identity("f")
    assert task(100, "shared").identity("f")["test_set"] == "shared"
    with pytest.raises(ValueError, match="test_set"):
        task(100, "first")


def test_parquet_features_that_are_not_finite_or_too_large_are_refused(tmp_path):
    """The value checks apply to every source, not only npz: a Parquet task with a NaN or a
    1e300 feature is refused when loaded, naming the file (it used to validate and then fail
    as a kernel matrix that is 'not positive definite')."""
    import duckdb

    from ibdb.core.errors import DataError
    from ibdb.data.task import load_task
    from ibdb.spec.sources import Task

    for bad, message in ((float("nan"), "contains NaN or infinite values"),
                         (1e300, "holds a value of magnitude 1e+300")):
        path = tmp_path / "t.parquet"
        with duckdb.connect() as con:
            con.execute("CREATE TABLE t (x0 DOUBLE, x1 DOUBLE, label INTEGER)")
            con.executemany("INSERT INTO t VALUES (?, ?, ?)",
                            [(float(i), bad if i == 4 else float(i % 5), i % 3)
                             for i in range(100)])
            con.execute(f"COPY t TO '{path}'")
        task = Task.model_validate({"name": "p", "source": {"kind": "parquet",
                                                            "path": "t.parquet"},
                                    "n_train": 30, "n_test": 20, "eps": [0.3]})
        with pytest.raises(DataError, match=re.escape(f"{path}: the feature array {message}")):
            load_task(task, spec_dir=tmp_path)
