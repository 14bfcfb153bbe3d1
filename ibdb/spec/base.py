"""The base of every spec model and the constrained types their fields share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


class SpecModel(BaseModel):
    """Strict (a string is not a number), frozen, and unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
