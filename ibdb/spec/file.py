"""Reading a spec file: YAML text -> a validated :class:`ibdb.spec.experiment.Experiment`; and the
JSON
Schema that describes the file (:func:`experiment_json_schema`).

Everything between the bytes on disk and the models: the size, alias and depth limits that keep
a hostile or mistaken file from exhausting memory (:func:`_check_size`), and error messages that
name the file, the field as the user wrote it (:func:`_field_path`) and a bounded preview of the
value (:func:`_preview`). Every failure is a :class:`ibdb.core.errors.SpecError`.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ibdb.core.errors import VALUE_CHARS, SpecError, shorten
from ibdb.spec.experiment import SPEC_VERSION, Experiment
from ibdb.spec.spaces import OPTIMIZER_KINDS

MAX_SPEC_BYTES = 1 << 20
"""The largest spec file read (1 MiB; a spec is a few KiB, a big generated sweep some 100)."""
MAX_SPEC_NODES = 100_000
"""The most values (mappings, lists and scalars) a spec may hold once YAML's aliases are
expanded: an alias bomb (nested anchors, "billion laughs") is refused before anything walks
it, so that no check or message expands it."""
MAX_SPEC_DEPTH = 64
"""The deepest nesting of mappings and lists a spec may have (a real one nests 5 deep)."""


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate a YAML spec file; raise :class:`SpecError` naming file, field and value."""
    path = Path(path)
    try:
        size = path.stat().st_size if path.is_file() else 0
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: the spec file holds {size} bytes, more than the "
                            f"{MAX_SPEC_BYTES} a spec may have. Check that it is the spec "
                            "file (a spec is a few KiB); split a huge sweep into several "
                            "specs.")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file. Check the path, or run `ibdb quickstart` "
                        "to write an example to examples/quickstart.yaml.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec file ({shorten(str(exc))}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = shorten(str(getattr(exc, "problem", None) or exc))
        raise SpecError(f"{path}: not valid YAML{line}: {problem}. "
                        "Fix the syntax and try again.") from None
    except RecursionError:
        raise SpecError(f"{path}: the YAML nests too deeply to read (more than "
                        f"{MAX_SPEC_DEPTH} levels are refused anyway). A spec nests a few "
                        "levels: check the brackets.") from None
    _check_size(path, data)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping with name, tasks, spaces and budgets; "
                        f"got {type(data).__name__}: {_preview(data, 60)}.")
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe_validation_error(path, exc)) from None


def _check_size(path: Path, data: Any) -> None:
    """Refuse a document that expands (through YAML aliases) to more than MAX_SPEC_NODES values,
    nests deeper than MAX_SPEC_DEPTH, or contains itself. Each distinct container is counted
    once (memoised by id), so the count of a bomb's 10^9 values costs a few dozen steps."""
    sizes: dict[int, int] = {}  # id of a container -> values in its expansion
    open_ids: set[int] = set()  # containers being counted (one that holds itself is a cycle)
    keep: list[Any] = []  # (so that no counted object is freed and its id reused)

    def count(value: Any, depth: int) -> int:
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise SpecError(f"{path}: the spec contains itself (a YAML alias *name inside "
                            "the anchor &name it refers to). Write the value out instead.")
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"{path}: the spec nests more than {MAX_SPEC_DEPTH} levels deep "
                            "(mappings and lists); a spec nests a few. Check the brackets and "
                            "indentation.")
        open_ids.add(key)
        keep.append(value)
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total = 1 + sum(count(item, depth + 1) for item in items)
        open_ids.discard(key)
        sizes[key] = total
        return total

    total = count(data, 0)
    if total > MAX_SPEC_NODES:
        raise SpecError(f"{path}: the spec expands to {total} values once its YAML aliases "
                        f"(*name) are replaced by their anchors (&name), more than the "
                        f"{MAX_SPEC_NODES} a spec may hold: nested aliases multiply (an "
                        "\"alias bomb\"). Use aliases for repeated values, not to repeat "
                        "aliases of aliases.")


_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxdict, _PREVIEW.maxlist = 3, 6, 6
_PREVIEW.maxstring, _PREVIEW.maxother, _PREVIEW.maxlong = 80, 80, 40


def _preview(value: Any, limit: int = VALUE_CHARS) -> str:
    """``value`` as a message shows it: a bounded repr (a few items of a container, the start
    of a long string), at most ``limit`` characters."""
    try:
        text = _PREVIEW.repr(value)
    except Exception:  # noqa: BLE001 (a value whose repr fails is shown by its type)
        text = f"<{type(value).__name__}>"
    return shorten(text, limit)


def _describe_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid spec ({exc.error_count()} problem"
             f"{'s' if exc.error_count() != 1 else ''}):"]
    for err in exc.errors()[:10]:
        path, value = _field_path(err["loc"]), err["input"]
        if err["type"] == "union_tag_invalid" and isinstance(value, dict):
            path, value = [*path, "kind"], value.get("kind")  # name the tag, not the mapping
        loc = shorten(".".join(path), 120)
        # a mapping's own checks name their fields and values in the message already
        shown = "" if err["type"] == "missing" or isinstance(value, dict) else \
            f" (got {_preview(value)})"
        lines.append(f"  - {loc or '<top level>'}: {shorten(err['msg'], 400)}{shown}")
    if exc.error_count() > 10:
        lines.append(f"  ... and {exc.error_count() - 10} more")
    lines.append("Fix these fields, then run `ibdb validate` on the file again.")
    return "\n".join(lines)


# pydantic's own tagged unions (the optimizer's) put the chosen member's tag in an error's
# location; the registries' unions (spaces, kernels, sources: ibdb.spec.kinds) do not.
_UNION_SLOTS = {"optimizer"}
_UNION_TAGS = set(OPTIMIZER_KINDS)


def _field_path(loc: tuple[Any, ...]) -> list[str]:
    """An error location as the field names a user wrote, e.g. ``spaces.0.optimizer.lr``.

    pydantic adds union members' names to the location ('float', "literal['median']", or the
    tag of a tagged union such as 'mlp'); a user thinks in field names, so keep only those.
    """
    parts: list[str] = []
    prev: Any = None
    for part in loc:
        after_slot = prev in _UNION_SLOTS
        skip = isinstance(part, str) and (
            "[" in part or part in {"float", "int", "str", "bool"}
            or part.startswith(("function-", "constrained-"))
            or (after_slot and part in _UNION_TAGS))
        if not skip:
            parts.append(str(part))
            prev = part
    return parts


def experiment_json_schema() -> dict:
    """The JSON Schema of a spec file (committed as schemas/experiment.schema.json)."""
    schema = Experiment.model_json_schema()
    schema["x-ibdb-spec-version"] = SPEC_VERSION
    schema["title"] = "ibdb experiment spec"
    return schema
