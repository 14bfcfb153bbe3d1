"""A researcher's own PyTorch model named in a spec: the factory, its arguments, and the laws of
its initial parameters. Shared by the ``torch`` space (trained copies of the model) and the
``empirical_nngp`` / ``empirical_ntk`` kernels (the model's own kernels).

``model: "package.module:factory"`` names any importable callable that returns a
``torch.nn.Module``; ``model_args`` are JSON values passed to it as keyword arguments. The name
is only ever imported (the module, then the attribute): nothing in a spec is evaluated. Like any
Python config system that instantiates what a config names, running such a spec runs that
module's code.

Initial parameters are a fixed transform of standard normals (``runners/torch_model.py``) that
reproduces PyTorch's default law for each known layer; ``init`` overrides the law of the
parameters whose names match a pattern (``fnmatch`` syntax, e.g. ``"blocks.*.weight"``; the
first matching pattern, in the order written, wins):

- ``{law: uniform, bound: b}``: uniform on (-b, b), from ``b * erf(z / sqrt 2)``;
- ``{law: normal, std: s, mean: m}``: ``m + s z``;
- ``{law: constant, value: c}``: every element c (uses no normals).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, ValidationInfo, field_validator

from ibdb.spec.base import PositiveFloat, SpecModel

# "package.module:attribute" (dotted names only: a reference, never an expression)
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
FACTORY_PATTERN = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
_FINITE = Annotated[float, Field(allow_inf_nan=False)]


class UniformLaw(SpecModel):
    """Uniform on (-bound, bound)."""

    law: Literal["uniform"]
    bound: PositiveFloat


class NormalLaw(SpecModel):
    """Normal of mean ``mean`` and standard deviation ``std``."""

    law: Literal["normal"]
    std: PositiveFloat
    mean: _FINITE = 0.0


class ConstantLaw(SpecModel):
    """Every element equal to ``value``."""

    law: Literal["constant"]
    value: _FINITE


InitLaw = Annotated[UniformLaw | NormalLaw | ConstantLaw, Field(discriminator="law")]


class ModelSpec(SpecModel):
    """The fields that name a user's model (a mixin of the torch space and empirical kernels)."""

    model: str = Field(description="The factory: 'package.module:callable', importable from "
                       "PYTHONPATH, returning a torch.nn.Module.")
    model_args: dict[str, JsonValue] = Field(
        default_factory=dict, description="Keyword arguments of the factory (JSON values).")
    init: dict[str, InitLaw] = Field(
        default_factory=dict, description="Laws of initial parameters by name pattern "
        "(fnmatch), overriding PyTorch's defaults; the first matching pattern wins.")

    @field_validator("model")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not FACTORY_PATTERN.match(value):
            raise ValueError(f"model = {value!r} is not 'package.module:factory' (dotted "
                             "names, one colon: e.g. 'mymodels.nets:make_mlp'); ibdb imports "
                             "it and never evaluates expressions")
        return value

    @field_validator("model_args", mode="before")
    @classmethod
    def _serialisable(cls, value: Any, info: ValidationInfo) -> Any:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model_args of {info.data.get('model', 'the model')!r} must be "
                             "JSON values (numbers, strings, booleans, null, lists and mappings "
                             f"with string keys), passed to the factory as keyword arguments: "
                             f"{exc}") from None
        return value

    def model_identity(self) -> dict[str, Any]:
        """The spec's part of what defines the model (the built module's fingerprint, which
        the run stage computes, joins it)."""
        out: dict[str, Any] = {"model": self.model, "model_args": self.model_args}
        if self.init:
            out["init"] = {k: v.model_dump(mode="json") for k, v in self.init.items()}
        return out
