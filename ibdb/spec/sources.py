"""Task sources in specs: where a task's arrays come from, and how they are preprocessed.

One model per source kind, each registered in :data:`SOURCES` with the function that reads it
(a tagged union on ``kind``, :mod:`ibdb.spec.kinds`: a source registered later is accepted by
specs, ``ibdb validate`` and the JSON Schema with no other edit); :mod:`ibdb.data.task` turns a
task into arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ibdb.core.references import Reference
from ibdb.spec.base import Name, NonNegativeInt, PositiveFloat, PositiveInt
from ibdb.spec.base import SpecModel as _Spec
from ibdb.spec.kinds import KindRegistry


class SourceSpec(_Spec):
    """The base of every task source: a ``kind`` that picks its model and reader
    (:data:`SOURCES`)."""

    kind: str

    def identity(self) -> dict[str, Any]:
        """The source's settings that name generated data (its fingerprint holds them): every
        field but ``kind``. Sources read from files are named by their content instead."""
        return self.model_dump(mode="json", exclude={"kind"})


class DigitsSource(SourceSpec):
    """scikit-learn's bundled 8x8 digits (1797 images, 64 features scaled to [0, 1], 10 classes)."""

    kind: Literal["digits"] = "digits"


class NpzSource(SourceSpec):
    """The user's own arrays in one ``.npz`` file: ``X_train, y_train, X_test, y_test``.

    Labels are integer class indices (1-D) or one-hot rows (2-D). A relative ``path`` is taken
    relative to the spec file that names it.
    """

    kind: Literal["npz"]
    path: Annotated[str, Field(min_length=1)]


class IdxSource(SourceSpec):
    """MNIST or Fashion-MNIST in torchvision's layout under a local folder ``root``:
    ``<root>/MNIST/raw/`` (``<root>/FashionMNIST/raw/`` for fashion-mnist) holding
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each plain or ``.gz``. Pixels are scaled to [0, 1]; images are
    1 x 28 x 28. ibdb never downloads: a relative ``root`` is taken from the spec file's folder.
    """

    kind: Literal["mnist", "fashion-mnist"]
    root: Annotated[str, Field(min_length=1)]


class Cifar10Source(SourceSpec):
    """CIFAR-10's python batches under ``<root>/cifar-10-batches-py/`` (``data_batch_1`` ..
    ``data_batch_5``, ``test_batch``), as torchvision unpacks them. Pixels scaled to [0, 1];
    images are 3 x 32 x 32. Read from the local folder only."""

    kind: Literal["cifar10"]
    root: Annotated[str, Field(min_length=1)]


class ParquetSource(SourceSpec):
    """The user's table in one Parquet file: feature columns named ``x...`` or ``X...``, an
    integer ``label`` column and, optionally, a ``split`` column of ``train`` / ``test`` (without
    it the rows are one pool that ``split_seed`` splits)."""

    kind: Literal["parquet"]
    path: Annotated[str, Field(min_length=1)]


class SyntheticSource(SourceSpec):
    """A teacher on an ``intrinsic_dim``-dimensional manifold embedded in ``ambient_dim``
    dimensions (see ``ibdb.data.datasets.synthetic_task``): latents ``z ~ U[-1, 1]^m``, points
    ``x = A z`` with ``A`` a random orthonormal d x m map (``nonlinearity: sin`` embeds
    ``sin(pi z / 2)`` instead), labels the argmax of a random tanh network of ``z`` with
    ``teacher_width`` hidden units. ``seed`` fixes the data; the task's ``split_seed`` the split.
    ``teacher_scale``: ``raw`` (the default) draws the teacher's input weights as standard
    normals, so its pre-activations' variance (m / 3) and with it the label function's
    sharpness grow with ``intrinsic_dim``; ``normalised`` draws them with variance 3 / m, so a
    sweep over ``intrinsic_dim`` changes the dimension and not the teacher's scale.
    """

    kind: Literal["synthetic"]
    intrinsic_dim: PositiveInt
    ambient_dim: PositiveInt
    n_classes: Annotated[int, Field(ge=2)] = 10
    n_points: PositiveInt = 3000
    nonlinearity: Literal["none", "sin"] = "none"
    teacher_width: PositiveInt = 32
    teacher_scale: Literal["raw", "normalised"] = "raw"
    seed: NonNegativeInt = 0

    def identity(self) -> dict[str, Any]:
        out = super().identity()
        if self.teacher_scale == "raw":  # (as before teacher_scale existed)
            del out["teacher_scale"]
        return out

    @model_validator(mode="after")
    def _manifold_fits(self) -> SyntheticSource:
        if self.intrinsic_dim > self.ambient_dim:
            raise ValueError(f"intrinsic_dim = {self.intrinsic_dim} exceeds ambient_dim = "
                             f"{self.ambient_dim}; the manifold must fit in the ambient space")
        return self


class PendulumSource(SourceSpec):
    """Inverted-pendulum control as supervised learning, simulated in process (see
    ``ibdb.data.datasets.pendulum_task``): states (angle, angular rate) visited by an LQR expert
    with torque saturated at ``torque_max``, labelled by the expert's action's bin among
    ``n_bins`` equal-count bins (classification targets, like every ibdb task). Short episodes
    (``steps`` x ``dt_s``, 0.5 s by default) keep the states spread out: long ones pile points
    up near the balanced state, nearly duplicate, which makes kernel matrices singular."""

    kind: Literal["pendulum"]
    n_points: PositiveInt = 3000
    n_bins: Annotated[int, Field(ge=2)] = 5
    angle_max_rad: PositiveFloat = 0.3
    rate_max_rad_s: PositiveFloat = 0.5
    torque_max: PositiveFloat = 5.0
    steps: PositiveInt = 10
    dt_s: PositiveFloat = 0.05
    seed: NonNegativeInt = 0


class OmniglotSource(SourceSpec):
    """One N-way K-shot episode of Omniglot from torchvision's layout under ``root``:
    ``<root>/omniglot-py/images_background/<alphabet>/<character>/*.png``
    (``images_evaluation`` with ``background: false``). ``episode_seed`` draws ``n_way``
    characters from all alphabets and, for each, ``k_shot`` training drawings; the character's
    other drawings are the test set. Images are 1 x 105 x 105 in [0, 1] (paper white = 1). Set
    the task's ``n_train`` to n_way x k_shot to train on the whole support set."""

    kind: Literal["omniglot"]
    root: Annotated[str, Field(min_length=1)]
    background: bool = True
    n_way: Annotated[int, Field(ge=2)] = 5
    k_shot: PositiveInt = 1
    episode_seed: NonNegativeInt = 0


class Mnist1dSource(SourceSpec):
    """MNIST-1D (Greydanus 2020, "Scaling down deep learning"): ten 1-D templates, one per
    digit, padded, dilated, scaled, translated, sheared and noised into signals of
    ``final_seq_length`` points, generated in process from ``seed`` by the ``mnist1d`` package's
    generator (``pip install mnist1d``; never its download). The defaults are the package's
    standard settings: 5000 signals of 40 points, the first ``train_split`` = 80 % (4000) the
    training split and the rest (1000) the test split, kept like mnist's; ``split_seed`` picks
    which of their rows a task uses. ``num_samples`` is split evenly over the 10 classes.
    ``shuffle_seq`` permutes the signal's points (one fixed permutation for all signals): it
    removes the spatial structure a CNN relies on and leaves an MLP indifferent. Signals are
    1 x 1 x ``final_seq_length`` images: a cnn space's k x k filters then convolve along the
    signal only (the rows above and below are zero padding), i.e. a 1-D convolution of width
    k; use ``pooling: none`` (2 x 2 pooling cannot halve a height of 1).
    """

    kind: Literal["mnist1d"]
    seed: NonNegativeInt = 42
    num_samples: Annotated[int, Field(ge=20, le=1_000_000, multiple_of=10)] = 5000
    train_split: Annotated[float, Field(gt=0, lt=1)] = 0.8
    final_seq_length: Annotated[int, Field(ge=2, le=4096)] = 40
    corr_noise_scale: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.25
    iid_noise_scale: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.02
    shuffle_seq: bool = False

    @model_validator(mode="after")
    def _both_splits_hold_points(self) -> Mnist1dSource:
        n_train = int(self.num_samples * self.train_split)
        if not 0 < n_train < self.num_samples:
            raise ValueError(f"train_split = {self.train_split} of num_samples = "
                             f"{self.num_samples} leaves {n_train} training and "
                             f"{self.num_samples - n_train} test signals; both must hold some")
        return self


class Preprocess(_Spec):
    """What happens to the data between loading and the runs, in this order: keep ``classes``
    (relabelled 0, 1, ... in the order given) before splitting; then ``downsample`` images by
    averaging ``downsample`` x ``downsample`` pixel blocks (rows and columns that do not fill a
    block are dropped); ``scale`` features (``standardize``:
    zero mean, unit variance per feature; ``minmax``: to [0, 1] per feature; both with statistics
    of the training split only); then project on the training split's first ``pca_dim``
    principal components (centred on the training mean)."""

    classes: Annotated[list[NonNegativeInt], Field(min_length=2)] | None = None
    downsample: PositiveInt = 1
    scale: Literal["none", "standardize", "minmax"] = "none"
    pca_dim: PositiveInt | None = None

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            repeated = sorted({c for c in value if value.count(c) > 1})
            raise ValueError(f"classes must be distinct; repeated: {repeated}")
        return value


@dataclass(frozen=True)
class SourceKind:
    """One kind of task source: its model, the function that reads it into arrays (the data
    stage's ``read(task, source, spec_dir) -> RawData``, see :mod:`ibdb.data.sources`), an
    optional check that its data fit in memory before they are read (``memory(task,
    spec_dir)``, raising SpecError), and the natural shape of one example it hands runners:
    ``vectors`` (N, d), ``images`` (N, C, H, W), ``signals`` (N, C, L, today as 1-high
    images), or ``as saved`` (the file's own)."""

    kind: str
    model: type[SourceSpec]
    read: Reference
    summary: str
    shape: Literal["vectors", "images", "signals", "as saved"] = "vectors"
    memory: Reference | None = None


_READERS = "ibdb.data.sources"
SOURCES: KindRegistry[SourceKind] = KindRegistry("task source", [
    SourceKind("digits", DigitsSource, f"{_READERS}:read_digits",
               "scikit-learn's bundled 8x8 digits", shape="images"),
    SourceKind("npz", NpzSource, f"{_READERS}:read_npz", "your arrays in one .npz file",
               shape="as saved", memory=f"{_READERS}:file_memory"),
    SourceKind("mnist", IdxSource, f"{_READERS}:read_idx", "MNIST from a local folder",
               shape="images"),
    SourceKind("fashion-mnist", IdxSource, f"{_READERS}:read_idx",
               "Fashion-MNIST from a local folder", shape="images"),
    SourceKind("cifar10", Cifar10Source, f"{_READERS}:read_cifar10",
               "CIFAR-10 from a local folder", shape="images"),
    SourceKind("parquet", ParquetSource, f"{_READERS}:read_parquet",
               "your table in one Parquet file", memory=f"{_READERS}:file_memory"),
    SourceKind("synthetic", SyntheticSource, f"{_READERS}:read_synthetic",
               "a teacher on a manifold of chosen dimension",
               memory=f"{_READERS}:synthetic_memory"),
    SourceKind("pendulum", PendulumSource, f"{_READERS}:read_pendulum",
               "an LQR expert's torques on inverted-pendulum states",
               memory=f"{_READERS}:pendulum_memory"),
    SourceKind("omniglot", OmniglotSource, f"{_READERS}:read_omniglot",
               "an N-way K-shot Omniglot episode from a local folder", shape="images"),
    SourceKind("mnist1d", Mnist1dSource, f"{_READERS}:read_mnist1d",
               "procedural MNIST-1D (the mnist1d package)", shape="signals"),
])


class Task(_Spec):
    """A supervised classification task: where the data comes from and how it is split.

    ``test_set``: for sources without a split of their own, the points are one permutation of
    the pool (by ``split_seed``); ``after_train`` (the default) takes the training set first and
    the test set from the points after it, so tasks that differ in ``n_train`` test on different
    points; ``shared`` takes the test set first, so tasks that differ only in ``n_train`` test on
    the same ``n_test`` points and their training sets are nested (what a sweep over n_train
    needs to vary one thing). Sources with their own split (mnist, cifar10, ...) draw the test
    rows independently of ``n_train`` either way.
    """

    name: Name
    source: Annotated[SourceSpec, SOURCES.union()]
    n_train: PositiveInt
    n_test: PositiveInt
    split_seed: NonNegativeInt = 0
    test_set: Literal["after_train", "shared"] = "after_train"
    eps: Annotated[list[PositiveFloat], Field(min_length=1)] = Field(
        description="Target errors on the test MSE (mean over test points and outputs, "
        "against one-hot targets); inductive bias is reported at each.",
    )
    preprocess: Preprocess = Preprocess()

    def identity(self, fingerprint: str) -> dict[str, Any]:
        """What defines the task's points (its part of the run id), given the content
        ``fingerprint`` of its data (the data stage's, which names the source's content and
        the preprocessing): the source's kind, the split's sizes and seed, and which points
        test (``test_set: shared`` only: tasks written before it existed keep their ids)."""
        out: dict[str, Any] = {"source": self.source.kind, "data": fingerprint,
                               "n_train": self.n_train, "n_test": self.n_test,
                               "split_seed": self.split_seed}
        if self.test_set != "after_train":
            out["test_set"] = self.test_set
        return out
