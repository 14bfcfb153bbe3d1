"""Experiment specs: the declarative YAML a user writes, as strict, frozen pydantic models.

An :class:`Experiment` names tasks, hypothesis spaces and budgets; every combination is one run.
Field names carry their units where they have one. Specs are strict: an unknown field, a string
where a number belongs, or a count below one is an error that names the field and the value.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ibdb.errors import SpecError

SPEC_VERSION = 1

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DigitsSource(_Spec):
    """scikit-learn's bundled 8x8 digits (1797 images, 64 features scaled to [0, 1], 10 classes)."""

    kind: Literal["digits"] = "digits"


class NpzSource(_Spec):
    """The user's own arrays in one ``.npz`` file: ``X_train, y_train, X_test, y_test``.

    Labels are integer class indices (1-D) or one-hot rows (2-D). A relative ``path`` is taken
    relative to the spec file that names it.
    """

    kind: Literal["npz"]
    path: Annotated[str, Field(min_length=1)]


class Task(_Spec):
    """A supervised classification task: where the data comes from and how it is split."""

    name: Name
    source: DigitsSource | NpzSource = Field(discriminator="kind")
    n_train: PositiveInt
    n_test: PositiveInt
    split_seed: NonNegativeInt = 0
    eps: Annotated[list[PositiveFloat], Field(min_length=1)] = Field(
        description="Target errors on the test MSE (mean over test points and outputs, "
        "against one-hot targets); inductive bias is reported at each.",
    )


class GPSpace(_Spec):
    """Functions drawn from a Gaussian process that interpolates the training data.

    The RBF kernel is ``k(x, x') = exp(-|x - x'|^2 / (2 bandwidth^2))``; ``"median"`` takes the
    median pairwise distance between training points. ``jitter`` is added to the diagonal of the
    training kernel matrix before its Cholesky factorisation.
    """

    name: Name
    kind: Literal["gp"] = "gp"
    kernel: Literal["rbf"] = "rbf"
    bandwidth: PositiveFloat | Literal["median"] = 1.0
    jitter: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 1e-8


HypothesisSpace = GPSpace


class Budget(_Spec):
    """How many hypotheses to sample, in chunks of ``chunk_size`` (one shard file per chunk)."""

    name: Name = "default"
    n_hypotheses: PositiveInt
    chunk_size: PositiveInt = 1000
    seed: NonNegativeInt = 0


class Experiment(_Spec):
    """Tasks x spaces x budgets: each combination is one run."""

    name: Name
    description: str = ""
    tasks: Annotated[list[Task], Field(min_length=1)]
    spaces: Annotated[list[HypothesisSpace], Field(min_length=1)]
    budgets: Annotated[list[Budget], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Experiment:
        for field in ("tasks", "spaces", "budgets"):
            names = [item.name for item in getattr(self, field)]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{field} names must be unique; repeated: {', '.join(dupes)}")
        return self

    def runs(self) -> list[RunSpec]:
        """Every (task, space, budget) combination, in spec order."""
        return [
            RunSpec(experiment=self.name, task=t, space=s, budget=b)
            for t, s, b in itertools.product(self.tasks, self.spaces, self.budgets)
        ]


class RunSpec(_Spec):
    """One run: a task, a hypothesis space and a budget, under an experiment's name."""

    experiment: Name
    task: Task
    space: HypothesisSpace
    budget: Budget

    @property
    def label(self) -> str:
        return f"{self.experiment}/{self.task.name}/{self.space.name}/{self.budget.name}"


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate a YAML spec file; raise :class:`SpecError` naming file, field and value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file. Check the path, or run `ibdb quickstart` "
                        "to write an example to examples/quickstart.yaml.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise SpecError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}. "
                        "Fix the syntax and try again.") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping with name, tasks, spaces and budgets; "
                        f"got {type(data).__name__}: {str(data)[:60]!r}.")
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe_validation_error(path, exc)) from None


def _describe_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid spec ({exc.error_count()} problem"
             f"{'s' if exc.error_count() != 1 else ''}):"]
    for err in exc.errors()[:10]:
        # pydantic adds the union member's name to the location (e.g. 'float' or
        # "literal['median']"); a user thinks in field names, so keep only those and indices.
        loc = ".".join(str(p) for p in err["loc"] if isinstance(p, int) or "[" not in str(p)
                       and str(p) not in {"float", "int", "str", "function-after"})
        shown = f" (got {err['input']!r})" if err["type"] != "missing" else ""
        lines.append(f"  - {loc or '<top level>'}: {err['msg']}{shown}")
    lines.append("Fix these fields, then run `ibdb validate` on the file again.")
    return "\n".join(lines)


def experiment_json_schema() -> dict:
    """The JSON Schema of a spec file (committed as schemas/experiment.schema.json)."""
    schema = Experiment.model_json_schema()
    schema["x-ibdb-spec-version"] = SPEC_VERSION
    schema["title"] = "ibdb experiment spec"
    return schema
