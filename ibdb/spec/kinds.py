"""Registries of the things that vary by kind in a spec (hypothesis spaces, kernels, task
sources), and the tagged union a spec field holds: any registered model, chosen by ``kind``.

Each registry maps a ``kind`` to an entry whose ``model`` is a :class:`ibdb.spec.base.SpecModel`
with a ``kind`` literal. A field annotated ``Annotated[Base, registry.union()]`` validates a
mapping with the model its ``kind`` names, and the JSON Schema lists every registered model, at
the moment it is asked for: an entry registered later (a test's toy kernel, a user's own task
source) is accepted by specs, ``ibdb validate`` and ``ibdb schema`` with no other edit.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic_core import PydanticCustomError, core_schema

from ibdb.core.errors import SpecError
from ibdb.core.registry import Registry
from ibdb.spec.base import SpecModel


class KindEntry(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def model(self) -> type[SpecModel]: ...


E = TypeVar("E", bound=KindEntry)


class KindRegistry(Registry[E]):
    """Entries by kind, in the order they were registered (the order help and schemas list).

    ``what`` names the things for messages ("kernel", "task source"); ``default`` is the kind a
    mapping without ``kind`` takes (None: ``kind`` is required)."""

    def __init__(self, what: str, entries: list[E], *, default: str | None = None) -> None:
        self.what = what
        self.default = default
        super().__init__(entries, key=lambda e: e.kind, unknown=self._unknown)

    def _unknown(self, kind: str, known: tuple[str, ...]) -> SpecError:
        return SpecError(f"no {self.what} of kind {kind!r}; the known kinds are "
                         f"{', '.join(known)}.")

    def _check(self, entry: E) -> None:
        kinds = entry.model.model_fields.get("kind")
        if kinds is None or entry.kind not in _literal_values(kinds.annotation):
            raise ValueError(f"{self.what} kind {entry.kind!r}: its model "
                             f"{entry.model.__name__} needs a field kind: Literal[{entry.kind!r}]")

    def kinds(self) -> tuple[str, ...]:
        return self.keys()

    def of(self, model: SpecModel) -> E:
        """The entry of a validated model (by its ``kind``)."""
        return self.get(model.kind)  # type: ignore[attr-defined]

    def union(self) -> _KindUnion:
        """The annotation of a field that holds any registered model (see the module doc)."""
        return _KindUnion(self)

    def models(self) -> tuple[type[SpecModel], ...]:
        return tuple(dict.fromkeys(e.model for e in self))


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    return tuple(getattr(annotation, "__args__", ()))


class _KindUnion:
    """Pydantic metadata: validate with the registered model the ``kind`` names, looked up at
    validation time; the JSON Schema is the registered models', one of them by ``kind``."""

    def __init__(self, registry: KindRegistry[Any]) -> None:
        self.registry = registry

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            self._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _dump, info_arg=True))

    def _validate(self, value: Any, info: ValidationInfo) -> Any:
        registry = self.registry
        if isinstance(value, registry.models()):
            return value
        if isinstance(value, str):  # a kind alone where its mapping belongs
            if value in registry:
                return registry.get(value).model.model_validate({"kind": value},
                                                                context=info.context)
            raise PydanticCustomError(
                "union_tag_invalid", "Input should be one of {expected}",
                {"tag": value, "expected": ", ".join(registry.kinds())})
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "model_type", "Input should be a mapping with kind: one of {expected}",
                {"expected": ", ".join(registry.kinds())})
        kind = value.get("kind", registry.default)
        if not isinstance(kind, str) or kind not in registry:
            raise PydanticCustomError(
                "union_tag_invalid", "Input should be one of {expected}",
                {"tag": kind, "expected": ", ".join(registry.kinds())})
        model = registry.get(kind).model
        if "kind" not in value:
            value = {**value, "kind": kind}
        return model.model_validate(value, context=info.context)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        # each model as a $ref to its definition, as pydantic writes a nested model (through
        # the generator's own entry point; the handler alone would inline every model)
        generator = getattr(handler, "generate_json_schema", None)
        generate = handler if generator is None else generator.generate_inner
        members = [generate(model.__pydantic_core_schema__) for model in self.registry.models()]
        return {"oneOf": members, "discriminator": {"propertyName": "kind"}}


def _dump(value: Any, info: Any) -> Any:
    return value.model_dump(mode=info.mode, round_trip=info.round_trip)
