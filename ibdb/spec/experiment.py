"""Experiment specs: the declarative YAML a user writes, as strict, frozen pydantic models.

An :class:`Experiment` names tasks (:mod:`ibdb.spec.sources`), hypothesis spaces
(:mod:`ibdb.spec.spaces`) and budgets (:mod:`ibdb.spec.budget`); every combination is one run,
a :class:`RunSpec`. Field names carry their units where they have one. Specs are strict: an
unknown field, a string where a number belongs, or a count below one is an error that names the
field and the value. Reading a spec file (YAML, its size limits and error messages) and its JSON
Schema are :mod:`ibdb.spec.file`'s.
"""

from __future__ import annotations

import itertools
from typing import Annotated

from pydantic import Field, model_validator

from ibdb.spec.base import Name
from ibdb.spec.base import SpecModel as _Spec
from ibdb.spec.budget import Budget
from ibdb.spec.sources import Task
from ibdb.spec.spaces import HypothesisSpace

SPEC_VERSION = 1


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
