"""Hypothesis spaces in specs: the gp space (kernels, fit), network spaces (mlp, cnn) with
their optimisers and fit criteria, and the tagged union a spec's ``spaces`` list holds.

Field names carry their units where they have one; every model is strict and frozen
(:class:`ibdb.spec.base.SpecModel`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, field_validator, model_validator

from ibdb.spec.base import Name, NonNegativeInt, PositiveFloat, PositiveInt
from ibdb.spec.base import SpecModel as _Spec


class GPFit(_Spec):
    """A gp space's fit criterion other than interpolation: the training MSE (over points and
    outputs, against one-hot targets, as the networks' ``train_mse`` criterion) is at most
    ``train_mse_max``. Hypotheses are the prior conditioned on that event, sampled exactly by
    rejection from a noisy-observation posterior of variance ``proposal_noise`` (``auto``: the
    one a pilot finds accepts most); rejected proposals are stored as not fitted, with no test
    losses (NULL in the store). See ``runners/conditioning.py``."""

    criterion: Literal["train_mse"] = "train_mse"
    train_mse_max: PositiveFloat
    proposal_noise: PositiveFloat | Literal["auto"] = Field(
        "auto", description="Variance s^2 of the proposal's observation noise; it changes how "
        "many proposals are accepted, not the law of the accepted ones.")


class GPSpace(_Spec):
    """Functions drawn from a Gaussian process that interpolates the training data.

    Kernels, with ``l`` the bandwidth and ``r = |x - x'|``:

    - ``rbf``: ``exp(-r^2 / (2 l^2))``
    - ``laplace``: ``exp(-r / l)`` (equal to ``matern`` with ``nu: 0.5``)
    - ``matern``: Rasmussen & Williams' form with ``s = sqrt(2 nu) r / l``; ``nu`` is 0.5, 1.5 or
      2.5: ``exp(-s)``, ``(1 + s) exp(-s)``, ``(1 + s + s^2 / 3) exp(-s)``
    - ``arccos``: the infinite-width ReLU network kernel (Cho & Saul, order 1) with a bias:
      ``2 E[relu(w.x + b) relu(w.x' + b)]`` for ``w ~ N(0, I / l^2)``, ``b ~ N(0, bias_variance)``.
    - ``nngp`` / ``ntk``: the infinite-width limits (Lee et al. 2018; Jacot et al. 2018) of the
      ``mlp`` space with the same ``depth`` (hidden layers, >= 1), ``init_scale`` (default 1.0)
      and ``activation`` (relu, the only one supported): the output's covariance over random
      initialisations, and the tangent kernel in the NTK parametrisation (gradients with respect
      to each parameter over its initial standard deviation). Every weight and bias has the
      variance of ibdb's init, ``init_scale^2 / (3 fan_in)``; the first layer's fan_in is the
      input dimension, the hidden and output layers' biases (fan_in = width) vanish in the
      limit unless ``width`` is given: give the mlp's width to compare with it (at width 256,
      depth 2 those biases nearly double the kernel). No ``bandwidth``. See
      ``runners/kernels.py``.
    - ``nngp`` / ``ntk`` with ``architecture: cnn``: the same limits (infinitely many channels)
      of the ``cnn`` space with the same ``layers``, ``kernel_size`` (odd, default 3),
      ``pooling`` (``none`` or ``avg``, required: ``max`` has no closed form and is refused),
      ``init_scale`` and relu; ``channels`` keeps the hidden convolutions' and the readout's
      bias variances, as ``width`` does for the mlp. The task's inputs must be images
      (``TaskData.image_shape``). See ``runners/cnn_kernels.py``.

    ``"median"`` takes the median pairwise distance between training points as ``l``. The prior
    is ``amplitude * k``: it scales the posterior covariance, not the mean. ``marginal_likelihood``
    chooses the amplitude (closed form), the bandwidth (a search from 1/32 to 32 times the median
    distance) or both by the evidence of the one-hot training targets; the run's info records
    them and the evidence (``runners/evidence.py``). ``jitter`` (times the amplitude) is added to
    the diagonal of the training kernel matrix before its Cholesky factorisation.

    Without ``fit`` a hypothesis interpolates the training data (the posterior given exact
    observations); ``fit`` (see :class:`GPFit`) conditions the prior on a training MSE at most
    ``train_mse_max`` instead, the event the networks' ``train_mse`` criterion keeps.
    """

    # the parameters of the cnn that nngp and ntk with architecture cnn are the limit of
    CNN_FIELDS: ClassVar[tuple[str, ...]] = ("layers", "kernel_size", "pooling", "channels")

    name: Name
    kind: Literal["gp"] = "gp"
    kernel: Literal["rbf", "laplace", "matern", "arccos", "nngp", "ntk"] = "rbf"
    bandwidth: PositiveFloat | Literal["median", "marginal_likelihood"] = Field(
        1.0, description="The length scale l, 'median' or 'marginal_likelihood'; not for nngp "
        "and ntk.")
    amplitude: PositiveFloat | Literal["marginal_likelihood"] = Field(
        1.0, description="The prior variance scale a: the kernel is a * k (or "
        "'marginal_likelihood').")
    jitter: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 1e-8
    nu: Literal[0.5, 1.5, 2.5] | None = Field(
        None, description="Smoothness of the matern kernel (required for it, only for it).")
    bias_variance: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="Variance of the hidden units' bias in the arccos kernel "
        "(default 0; only for arccos).")
    fit: GPFit | None = Field(
        None, description="Condition on train MSE <= train_mse_max instead of interpolating.")
    depth: PositiveInt | None = Field(
        None, description="Hidden layers of the network (required for nngp and ntk, only for "
        "them).")
    init_scale: PositiveFloat | None = Field(
        None, description="The network's init scale: weights and biases of variance "
        "init_scale^2 / (3 fan_in) (default 1.0, PyTorch's; only for nngp and ntk).")
    width: PositiveInt | None = Field(
        None, description="Keep the hidden and output layers' bias variance init_scale^2 / "
        "(3 width) that the infinite width sends to 0 (only for nngp and ntk).")
    activation: Literal["relu", "tanh", "gelu", "sigmoid"] | None = Field(
        None, description="The network's activation: relu (the default), the only one nngp "
        "and ntk support; only for them.")
    architecture: Literal["mlp", "cnn"] | None = Field(
        None, description="The network nngp and ntk are the limit of: mlp (the default) or "
        "cnn (ibdb's cnn space, on image tasks); only for them.")
    layers: PositiveInt | None = Field(
        None, description="Convolutions of the cnn (required with architecture cnn, only "
        "with it).")
    kernel_size: PositiveInt | None = Field(
        None, description="The cnn's odd filter size (default 3; only with architecture cnn).")
    pooling: Literal["max", "avg", "none"] | None = Field(
        None, description="The cnn's pooling after each convolution: none or avg (required "
        "with architecture cnn, only with it; max has no closed-form kernel).")
    channels: PositiveInt | None = Field(
        None, description="Keep the cnn's hidden convolutions' and readout's bias variances "
        "that infinitely many channels send to 0 (only with architecture cnn).")

    @model_validator(mode="before")
    @classmethod
    def _network_defaults(cls, data: Any) -> Any:
        # nngp and ntk always carry their network's init_scale, activation and architecture
        # (and a cnn its kernel_size), so that leaving a default out and writing it give the
        # same dump (and run id); an mlp's architecture is left out of the dump (_trim_dump)
        if isinstance(data, dict) and data.get("kernel") in ("nngp", "ntk"):
            data = dict(data)
            defaults = [("init_scale", 1.0), ("activation", "relu"), ("architecture", "mlp")]
            if data.get("architecture") == "cnn":
                defaults.append(("kernel_size", 3))
            for key, default in defaults:
                if data.get(key) is None:
                    data[key] = default
        return data

    @model_validator(mode="after")
    def _parameters_match_kernel(self) -> GPSpace:
        network = self.kernel in ("nngp", "ntk")
        cnn = network and self.architecture == "cnn"
        for key in ("depth", "init_scale", "width", "activation", "architecture",
                    *self.CNN_FIELDS):
            if not network and getattr(self, key) is not None:
                cnn_only = " with architecture cnn" if key in self.CNN_FIELDS else ""
                raise ValueError(f"{key} = {getattr(self, key)} applies only to kernels 'nngp' "
                                 f"and 'ntk'{cnn_only} (kernel is {self.kernel!r}); remove it")
        if network and not cnn:
            for key in self.CNN_FIELDS:
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} = {getattr(self, key)} applies only to "
                                     f"architecture cnn (kernel {self.kernel!r} is the limit of "
                                     "an mlp here); remove it or add architecture: cnn")
        if cnn:
            self._check_cnn()
        if network and not cnn and self.depth is None:
            raise ValueError(f"kernel {self.kernel!r} needs depth: the hidden layers (>= 1) of "
                             "the mlp it is the limit of")
        if network and "bandwidth" in self.model_fields_set:
            raise ValueError(f"bandwidth applies to rbf, laplace, matern and arccos, not to "
                             f"{self.kernel!r}, whose scales are the network's (init_scale and "
                             "the input dimension); remove it")
        if network and self.activation != "relu":
            raise ValueError(f"kernel {self.kernel!r} is implemented for activation relu only "
                             f"(the arc-cosine recursion), not {self.activation!r}")
        if self.kernel == "matern" and self.nu is None:
            raise ValueError("kernel 'matern' needs nu: 0.5, 1.5 or 2.5")
        if self.kernel != "matern" and self.nu is not None:
            raise ValueError(f"nu = {self.nu} applies only to kernel 'matern' "
                             f"(kernel is {self.kernel!r}); remove it")
        if self.kernel != "arccos" and self.bias_variance is not None:
            raise ValueError(f"bias_variance = {self.bias_variance} applies only to kernel "
                             f"'arccos' (kernel is {self.kernel!r}); remove it")
        if (self.kernel == "arccos" and not self.bias_variance
                and self.bandwidth == self.amplitude == "marginal_likelihood"):
            raise ValueError("without bias_variance the arccos kernel's bandwidth only scales it "
                             "(k / l^2), so the evidence cannot choose it and the amplitude "
                             "together: give bias_variance > 0 or a numeric bandwidth")
        return self

    def _check_cnn(self) -> None:
        what = f"kernel {self.kernel!r} with architecture cnn"
        if self.depth is not None:
            raise ValueError(f"{what} takes layers (its convolutions), not depth = "
                             f"{self.depth}; remove depth")
        if self.width is not None:
            raise ValueError(f"{what} takes channels (the cnn's filters per layer), not width = "
                             f"{self.width}; remove width")
        if self.layers is None:
            raise ValueError(f"{what} needs layers: the convolutions (>= 1) of the cnn it is "
                             "the limit of")
        if self.pooling is None:
            raise ValueError(f"{what} needs pooling: none or avg (the cnn space's default, "
                             "max, has no closed-form kernel)")
        if self.pooling == "max":
            raise ValueError(f"{what}: pooling max has no closed-form infinite-width kernel "
                             "(the covariance of maxima of correlated Gaussians); use pooling "
                             "avg or none")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"{what}: kernel_size must be odd (as the cnn space's, so that "
                             f"zero padding keeps the image size); got {self.kernel_size}")

    # parameters a kernel does not use (None) and the default amplitude are left out, so the
    # dump of an rbf space (and its run id) is what it was before other kernels existed
    DUMP_OMITS: ClassVar[dict[str, Any]] = {
        **dict.fromkeys(("nu", "bias_variance", "depth", "init_scale", "width", "activation",
                         "architecture", *CNN_FIELDS, "fit")),
        "amplitude": 1.0}

    def _trim_dump(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.kernel in ("nngp", "ntk"):
            data.pop("bandwidth", None)  # not a parameter of theirs
            if data.get("architecture") == "mlp":
                del data["architecture"]  # as before the cnn architecture existed
        return data


Activation = Literal["relu", "tanh", "gelu", "sigmoid"]


class _OptimizerBase(_Spec):
    lr: PositiveFloat = Field(description="Learning rate.")
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        0.0, description="L2 penalty added to the gradient (as torch.optim's weight_decay).")
    epochs: PositiveInt = Field(
        description="The most epochs a network trains (fewer when fit.stop_when_fit stops it).")
    batch_size: PositiveInt | Literal["full"] = Field(
        description="Training points per step, or 'full' for full-batch gradient descent. Each "
        "network visits the training set in its own random order every epoch; the last batch of "
        "an epoch holds the remainder.")


class SGD(_OptimizerBase):
    """Stochastic gradient descent as ``torch.optim.SGD`` (momentum without dampening)."""

    kind: Literal["sgd"]
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0


class Adam(_OptimizerBase):
    """Adam as ``torch.optim.Adam`` (epsilon 1e-8; weight decay as an L2 gradient term)."""

    kind: Literal["adam"]
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]],
                     Field(min_length=2, max_length=2)] = Field(
        default=[0.9, 0.999], description="Decay rates of the first and second moments.")


Optimizer = Annotated[SGD | Adam, Field(discriminator="kind")]


class FitCriterion(_Spec):
    """When a trained network counts as fitting the training set (the definition conditions on it).

    ``train_accuracy``: every training point's largest output is its class. ``train_mse``: the
    training MSE (over points and outputs, against one-hot targets) is at most ``train_mse_max``.
    The criterion is checked at the end of each epoch; with ``stop_when_fit`` a network stops
    training at the first epoch that meets it, otherwise every network trains all epochs and is
    judged at the end. Networks that never fit are stored with ``fitted = false``.
    """

    criterion: Literal["train_accuracy", "train_mse"] = "train_accuracy"
    train_mse_max: PositiveFloat | None = None
    stop_when_fit: bool = True

    @model_validator(mode="after")
    def _threshold_matches_criterion(self) -> FitCriterion:
        if self.criterion == "train_mse" and self.train_mse_max is None:
            raise ValueError("criterion 'train_mse' needs train_mse_max (e.g. 0.01)")
        if self.criterion == "train_accuracy" and self.train_mse_max is not None:
            raise ValueError(f"train_mse_max = {self.train_mse_max} applies only to criterion "
                             "'train_mse'; remove it or set criterion: train_mse")
        return self


class _NetworkSpace(_Spec):
    name: Name
    kind: str  # narrowed to its literal by each space
    activation: Activation = "relu"
    init_scale: PositiveFloat = Field(
        1.0, description="Weights and biases start uniform on +-init_scale/sqrt(fan_in) "
        "(PyTorch's default initialisation at 1.0).")
    optimizer: Optimizer
    fit: FitCriterion = FitCriterion()


class MLPSpace(_NetworkSpace):
    """Fully connected networks trained on the MSE against one-hot targets, from random inits.

    ``depth`` hidden layers of ``width`` units (depth 0 is a linear model), the activation after
    each hidden layer, a linear output layer with one unit per class.
    """

    kind: Literal["mlp"]
    width: PositiveInt
    depth: NonNegativeInt


class CNNSpace(_NetworkSpace):
    """Small convolutional networks for image tasks, trained like :class:`MLPSpace`.

    ``layers`` convolutions of ``channels`` output channels and a square ``kernel_size`` (odd,
    zero-padded to keep the image size), each followed by the activation and, unless ``pooling``
    is ``none``, a 2x2 pooling of stride 2; then a linear layer from the flattened feature maps
    to one output per class. The task's inputs must be images (see ``TaskData.image_shape``).
    """

    kind: Literal["cnn"]
    channels: PositiveInt
    layers: PositiveInt
    kernel_size: PositiveInt = 3
    pooling: Literal["max", "avg", "none"] = "max"

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("kernel_size must be odd, so that zero padding keeps the image size")
        return value


def _space_kind(value: Any) -> str | None:
    # A space without `kind` is a gp space, as it was before networks existed.
    if isinstance(value, dict):
        return value.get("kind", "gp")
    return getattr(value, "kind", None)


SPACE_KINDS = ("gp", "mlp", "cnn")

HypothesisSpace = Annotated[
    Annotated[GPSpace, Tag("gp")] | Annotated[MLPSpace, Tag("mlp")]
    | Annotated[CNNSpace, Tag("cnn")],
    Discriminator(_space_kind, custom_error_type="space_kind",
                  custom_error_message=f"Input should be one of {', '.join(SPACE_KINDS)}"),
]
_SPACE_ADAPTER: TypeAdapter[Any] = TypeAdapter(HypothesisSpace)


def parse_space(data: dict[str, Any]) -> GPSpace | MLPSpace | CNNSpace:
    """Validate one hypothesis space given as a mapping (as in a spec's ``spaces`` list)."""
    return _SPACE_ADAPTER.validate_python(data)

