"""A user's PyTorch model, as a spec names it (:mod:`ibdb.spec.models`): import its factory,
build and check the module on a task, and give each parameter the law its initial values follow.

Import only, never evaluation: ``model: "package.module:factory"`` imports ``package.module`` and
reads the attribute path after the colon. Every failure (no such module or attribute, a factory
that raises or returns something that is not a Module, outputs of the wrong shape) is a
:class:`SpecError` that names the factory and the shapes, raised by the plan before anything
runs or is stored.

Initial laws (what ``evaluate(noise)`` draws, see ``runners/training.py``), by the layer that
owns a parameter, reproducing PyTorch's own ``reset_parameters``:

- Linear and Conv (1-3 d, transposed too): weight and bias uniform on +-1/sqrt(fan_in), with
  fan_in = weight.shape[1] x the kernel's size (torch's kaiming_uniform(a=sqrt 5) bound);
- norm layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm): weight 1, bias 0;
- Embedding (without padding_idx): standard normal;
- MultiheadAttention: in_proj / q,k,v_proj weights xavier-uniform (bound sqrt(6 / (fan_in +
  fan_out))), in_proj_bias and out_proj.bias 0, bias_k / bias_v xavier-normal;
- any other parameter: a constant if the factory builds it to the same values under two
  different torch seeds (e.g. a fixed positional code), otherwise an error asking for its law
  under ``init:``.
A spec's ``init`` patterns override these. The built module's values are checked against the
default laws (bounds, constants, and the spread of tensors of 64 or more elements), so a factory
that initialises a layer its own way is caught, not silently mis-sampled.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import inspect
import json
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ibdb.core.errors import SpecError, shorten
from ibdb.data.task import TaskData
from ibdb.runners.compatibility import check_network
from ibdb.runners.sizes import Sizes
from ibdb.runners.training import ParamLaw
from ibdb.spec.models import ModelSpec

PROBE_EXAMPLES = 2  # examples in the batch that checks a built module's outputs
SPREAD_CHECK_MIN = 64  # elements from which a parameter's spread is checked against its law

_NORMS = tuple(c for c in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                           getattr(nn, "RMSNorm", None)) if c is not None)
_AFFINE = (nn.Linear, nn.modules.conv._ConvNd)


def load_factory(model: str) -> Callable[..., Any]:
    """The callable ``model`` names (``"package.module:attribute.path"``), imported, never
    evaluated."""
    module_name, _, attribute = model.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise SpecError(f"model {model!r}: no module {exc.name!r} on the Python path. Put "
                            "the folder that holds your model's file on PYTHONPATH (or install "
                            "its package), then run again.") from None
        raise SpecError(f"model {model!r}: importing {module_name!r} failed: {exc}. Install "
                        "what it imports.") from None
    except Exception as exc:  # the user's module failed at import: say where, not a traceback
        raise SpecError(f"model {model!r}: importing {module_name!r} raised "
                        f"{type(exc).__name__}: {shorten(str(exc))}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            have = sorted(n for n in dir(obj) if not n.startswith("_"))
            raise SpecError(f"model {model!r}: {getattr(obj, '__name__', module_name)!r} has "
                            f"no attribute {part!r} (it has: {shorten(', '.join(have))}).")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError(f"model {model!r} is a {type(obj).__name__}, not a callable that "
                        "returns a torch.nn.Module.")
    return obj


def build_module(spec: ModelSpec, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """The module the factory builds from ``model_args``, in float32, its lazy layers
    materialised by one forward pass, and checked to map (N, *input_shape) to (N, n_outputs)."""
    factory = load_factory(spec.model)
    # the factory draws its own initial values from torch's global generator: leave it as it
    # was (ibdb's hypotheses take theirs from explicit noise)
    with torch.random.fork_rng(devices=[]):
        return _build(spec, factory, input_shape, n_outputs)


def _build(spec: ModelSpec, factory: Callable[..., Any], input_shape: tuple[int, ...],
           n_outputs: int) -> nn.Module:
    try:
        module = factory(**spec.model_args)
    except Exception as exc:
        raise SpecError(f"model {spec.model!r}: the factory raised {type(exc).__name__}: "
                        f"{shorten(str(exc))} when called with model_args = "
                        f"{shorten(json.dumps(spec.model_args))}.") from None
    if not isinstance(module, nn.Module):
        raise SpecError(f"model {spec.model!r} returned a {type(module).__name__}, not a "
                        "torch.nn.Module; the factory must build and return the module.")
    module = module.to(torch.float32)
    probe = torch.zeros((PROBE_EXAMPLES, *input_shape), dtype=torch.float32)
    expected = (PROBE_EXAMPLES, n_outputs)
    module.eval()  # (no running statistics move while probing)
    try:
        with torch.no_grad():
            out = module(probe)
    except Exception as exc:
        raise SpecError(f"model {spec.model!r} failed on a batch of shape {tuple(probe.shape)} "
                        f"(the task's examples are {input_shape}): {type(exc).__name__}: "
                        f"{shorten(str(exc))}. It must take (N, *{input_shape}) and return "
                        f"(N, k) = (N, {n_outputs}).") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError(f"model {spec.model!r} returned {got} for a batch of shape "
                        f"{tuple(probe.shape)}; it must return (N, k) = {expected}: one output "
                        "per class of the task.")
    if not out.is_floating_point():
        raise SpecError(f"model {spec.model!r} returned {out.dtype} outputs; it must return "
                        "floating-point scores (N, k), which training compares with one-hot "
                        "targets by the MSE.")
    params = dict(module.named_parameters())
    if not params:
        raise SpecError(f"model {spec.model!r} has no parameters: there is nothing to train "
                        "or to draw at random, so every hypothesis would be the same.")
    frozen = [name for name, p in params.items() if not p.requires_grad]
    if frozen:
        raise SpecError(f"model {spec.model!r}: parameters {shorten(', '.join(frozen))} have "
                        "requires_grad False; ibdb trains every parameter. Register a fixed "
                        "tensor as a buffer (module.register_buffer) to keep it out of training.")
    for name, param in params.items():
        if isinstance(param, nn.parameter.UninitializedParameter):
            raise SpecError(f"model {spec.model!r}: parameter {name!r} is still "
                            "uninitialised after a forward pass.")
    _refuse_randomness(spec.model, module)
    module.train()
    return module


def _refuse_randomness(model: str, module: nn.Module) -> None:
    """A hypothesis is its noise row alone: a dropout's masks would be randomness outside it."""
    for name, sub in module.named_modules():
        p = getattr(sub, "dropout", None) if isinstance(sub, nn.MultiheadAttention) else \
            getattr(sub, "p", None) if isinstance(sub, nn.modules.dropout._DropoutNd) else None
        if p:
            raise SpecError(f"model {model!r}: {name or 'the model'} ({type(sub).__name__}) has "
                            f"dropout p = {p}; its masks would be randomness outside a "
                            "hypothesis's noise. Build the model with dropout 0.")


# -- initial laws ---------------------------------------------------------------------------

def parameter_laws(spec: ModelSpec, module: nn.Module, input_shape: tuple[int, ...],
                   n_outputs: int) -> list[tuple[str, torch.Tensor, ParamLaw]]:
    """Every parameter (``named_parameters`` order), with the law its initial values follow:
    the spec's ``init`` pattern if one matches, else the owning layer's default (module doc)."""
    owners = dict(module.named_modules())
    out, unknown = [], []
    for name, param in module.named_parameters():
        pattern = next((p for p in spec.init if fnmatch.fnmatchcase(name, p)), None)
        if pattern is not None:
            out.append((name, param, _from_spec(spec.init[pattern])))
            continue
        law = _default_law(name, param, owners)
        if law is None:
            unknown.append(name)
        else:
            _check_built(spec.model, name, param, law)
        out.append((name, param, law))
    if unknown:
        fixed = _as_built(spec, unknown, input_shape, n_outputs)
        out = [(n, p, fixed[n] if law is None else law) for n, p, law in out]
    return out


def _from_spec(law: Any) -> ParamLaw:
    if law.law == "uniform":
        return ParamLaw("uniform", scale=law.bound)
    if law.law == "normal":
        return ParamLaw("normal", scale=law.std, mean=law.mean)
    return ParamLaw("constant", mean=law.value)


def _fans(param: torch.Tensor) -> tuple[int, int]:
    """torch.nn.init's fan_in and fan_out of a weight."""
    receptive = math.prod(param.shape[2:]) if param.dim() > 2 else 1
    fan_out = param.shape[0] * receptive
    fan_in = (param.shape[1] if param.dim() > 1 else 1) * receptive
    return fan_in, fan_out


def _default_law(name: str, param: torch.Tensor, owners: dict[str, nn.Module]
                 ) -> ParamLaw | None:
    owner_name, _, local = name.rpartition(".")
    owner = owners[owner_name]
    parent = owners.get(owner_name.rpartition(".")[0]) if owner_name else None
    if isinstance(owner, _AFFINE) and local in ("weight", "bias"):
        if local == "bias" and isinstance(parent, nn.MultiheadAttention) \
                and owner is parent.out_proj:
            return ParamLaw("constant", mean=0.0)
        fan_in = _fans(owner.weight)[0]
        return ParamLaw("uniform", scale=1.0 / math.sqrt(fan_in)) if fan_in else \
            ParamLaw("constant", mean=0.0)
    if isinstance(owner, _NORMS) and local in ("weight", "bias"):
        return ParamLaw("constant", mean=1.0 if local == "weight" else 0.0)
    if isinstance(owner, nn.Embedding) and local == "weight" and owner.padding_idx is None:
        return ParamLaw("normal", scale=1.0)
    if isinstance(owner, nn.MultiheadAttention):
        if local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            fan_in, fan_out = _fans(param)
            return ParamLaw("uniform", scale=math.sqrt(6.0 / (fan_in + fan_out)))
        if local == "in_proj_bias":
            return ParamLaw("constant", mean=0.0)
        if local in ("bias_k", "bias_v"):
            fan_in, fan_out = _fans(param)
            return ParamLaw("normal", scale=math.sqrt(2.0 / (fan_in + fan_out)))
    return None


def _check_built(model: str, name: str, param: torch.Tensor, law: ParamLaw) -> None:
    """Refuse a default law that the factory's own values contradict (a custom init)."""
    values = param.detach().double().reshape(-1)
    n = values.numel()
    bad = None
    if law.kind == "constant":
        if not bool((values == law.mean).all()):
            bad = f"not all equal to {law.mean}"
    elif law.kind == "uniform":
        if float(values.abs().max()) > law.scale * (1 + 1e-6):
            bad = f"values up to {float(values.abs().max()):.4g}, past the bound {law.scale:.4g}"
        elif n >= SPREAD_CHECK_MIN and abs(float(values.std()) / (law.scale / math.sqrt(3))
                                            - 1) > 5 / math.sqrt(n):
            bad = (f"standard deviation {float(values.std()):.4g}, where the uniform law on "
                   f"+-{law.scale:.4g} has {law.scale / math.sqrt(3):.4g}")
    elif n >= SPREAD_CHECK_MIN and abs(float(values.std()) / law.scale - 1) > 5 / math.sqrt(n):
        bad = f"standard deviation {float(values.std()):.4g}, not {law.scale:.4g}"
    if bad is not None:
        raise SpecError(f"model {model!r}: parameter {name!r} {tuple(param.shape)} does not "
                        f"follow PyTorch's default law for its layer ({law.describe()}): "
                        f"{bad}. The factory initialises it its own way; give its law under "
                        f"init, e.g. init: {{{name!r}: {{law: normal, std: 0.02}}}}.")


def _as_built(spec: ModelSpec, names: list[str], input_shape: tuple[int, ...],
              n_outputs: int) -> dict[str, ParamLaw]:
    """Parameters of no known layer: constants when two builds under different torch seeds
    agree (the factory fixes them), else an error asking for their law."""
    builds = []
    for seed in (1, 2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            builds.append(dict(build_module(spec, input_shape, n_outputs).named_parameters()))
    out = {}
    for name in names:
        first, second = builds[0][name].detach(), builds[1][name].detach()
        if not torch.equal(first, second):
            raise SpecError(f"model {spec.model!r}: parameter {name!r} {tuple(first.shape)} "
                            "belongs to no layer whose default initialisation ibdb knows, and "
                            "the factory draws it at random; give its law under init, e.g. "
                            f"init: {{{name!r}: {{law: normal, std: 0.02}}}}.")
        out[name] = ParamLaw("constant", values=first.clone())
    return out


# -- what the plan asks of a torch space ----------------------------------------------------

def check_space(space: Any, data: TaskData) -> None:
    """The plan's check: the model builds and maps the task's examples to k outputs, its
    laws are known, and the batch size fits n_train."""
    check_network(space, data)
    module = build_module(space, data.input_shape, data.n_outputs)
    parameter_laws(space, module, data.input_shape, data.n_outputs)


def space_facts(space: Any, data: TaskData) -> dict[str, Any]:
    """The built module's part of the run id: its parameters (name, shape, law) and buffers,
    and a digest of the source of the factory and of every module class in it not torch's."""
    module = build_module(space, data.input_shape, data.n_outputs)
    laws = parameter_laws(space, module, data.input_shape, data.n_outputs)
    return {"module": {
        "parameters": [[name, list(param.shape), law.describe()] for name, param, law in laws],
        "buffers": [[name, list(b.shape)] for name, b in module.named_buffers()],
        "source_sha256": source_digest(load_factory(space.model), module)}}


def source_digest(factory: Callable[..., Any], module: nn.Module) -> str:
    """sha256 of the factory's source and of each non-torch module class's source (sorted);
    code that cannot be read (a C extension) enters by its qualified name."""
    parts = {_source(factory)}
    for sub in module.modules():
        cls = type(sub)
        if not cls.__module__.startswith("torch."):
            parts.add(_source(cls))
    return hashlib.sha256("\n\0".join(sorted(parts)).encode()).hexdigest()


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def space_sizes(space: Any, data: TaskData) -> Sizes:
    """Memory per hypothesis as for the built-in networks (parameters with gradients and
    optimiser moments; every module's outputs for train and test points, forward and
    backward; its noise row and data orders), and the noise length: one normal per random
    parameter element, one per training point and epoch."""
    module = build_module(space, data.input_shape, data.n_outputs)
    laws = parameter_laws(space, module, data.input_shape, data.n_outputs)
    params = sum(p.numel() for _, p, _ in laws)
    normals = sum(p.numel() for _, p, law in laws if law.kind != "constant")
    units = activations_per_example(module, data.input_shape)
    n_train, n_test = len(data.x_train), len(data.x_test)
    opt = space.optimizer
    orders = 0 if opt.batch_size == "full" else opt.epochs * n_train
    # (a hypothesis is trained from its noise row, normals and orders: 8 + 8 bytes per order
    # element, the normals and their ranks)
    return Sizes(
        8 * (4 * params + 3 * (n_train + n_test) * units + normals + 2 * orders),
        f"8 bytes x (4 x {params} parameters + 3 x (n_train + n_test) x {units} activations "
        f"+ {normals} normals + 2 x {orders} data-order normals and ranks)",
        noise_dim=normals + orders)


def activations_per_example(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Elements that every submodule outputs for one example (forward hooks on one pass)."""
    total = 0

    def count(_: nn.Module, __: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()
    handles = [m.register_forward_hook(count) for m in module.modules()]
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros((1, *input_shape), dtype=torch.float32))
    finally:
        for h in handles:
            h.remove()
        module.train(training)
    return max(1, total)
