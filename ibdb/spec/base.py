"""The base of every spec model and the constrained types their fields share."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_serializer

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


class SpecModel(BaseModel):
    """Strict (a string is not a number), frozen, and unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Run ids and stored specs hash a model's dump. A field added later is left out of the dump
    # while it holds the value every spec had before it existed (None for an absent optional
    # block), so older specs keep their dumps and ids: field -> that value.
    DUMP_OMITS: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _dump_without_later_defaults(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key, value in self.DUMP_OMITS.items():
            if key in data and data[key] == value:
                del data[key]
        return self._trim_dump(data)

    def _trim_dump(self, data: dict[str, Any]) -> dict[str, Any]:
        """Further keys a model leaves out of its dump (a hook for subclasses)."""
        return data
