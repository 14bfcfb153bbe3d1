"""The store's views: one ``queries/*.sql`` file each, with per-method columns from the registry.

A view file is a plain SELECT headed by a comment stating its grain. A view that shows one
column set per estimation method (``method_agreement``) holds the marker ``/* per-method
columns */`` where :func:`view_definitions` writes those columns, derived from
:data:`ibdb.core.methods.METHODS`, so a new method needs no edit here or in the SQL file.
"""

from __future__ import annotations

import re
from importlib import resources

import duckdb

from ibdb.core.methods import METHODS, MethodRegistry

METHOD_COLUMNS_MARKER = "/* per-method columns */"


def method_columns(methods: MethodRegistry = METHODS) -> str:
    """The per-method aggregate columns over ``ib_estimates`` rows, led by a comma."""
    bits = {m.name: f"max(bits) FILTER (method = '{m.name}')" for m in methods}
    lines = []
    for m in methods:
        lines.append(f"{bits[m.name]} AS {m.name}_bits")
        if m.may_be_lower_bound:
            lines.append(f"bool_or(bound = 'lower') FILTER (method = '{m.name}') "
                         f"AS {m.name}_is_lower_bound")
    for yardstick in methods.yardsticks():
        for m in methods:
            if m.role == "estimate" and m.name != yardstick.name:
                lines.append(f"{bits[m.name]} - {bits[yardstick.name]} "
                             f"AS {m.name}_minus_{yardstick.name}")
    return (", " + ",\n    ".join(lines)) if lines else ""


def view_definitions(methods: MethodRegistry = METHODS) -> list[tuple[str, str]]:
    """(name, SELECT body) for every ``queries/*.sql`` file, in name order."""
    folder = resources.files("ibdb.queries")
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            body = entry.read_text(encoding="utf-8")
            if METHOD_COLUMNS_MARKER in body:
                body = body.replace(METHOD_COLUMNS_MARKER, method_columns(methods))
            out.append((entry.name[:-4], body))
    return out


def create_views(con: duckdb.DuckDBPyConnection, *, temporary: bool) -> None:
    """(Re-)create every view on ``con``; ``temporary`` for a read-only store, whose catalog
    cannot change (temporary views serve the session). Views that name other views come
    after them, so that this also works inside a transaction (where a failed statement
    would abort it)."""
    scope = "TEMP " if temporary else ""
    for name, body in _dependency_order(view_definitions()):
        con.execute(f"CREATE OR REPLACE {scope}VIEW {name} AS {body}")


def _dependency_order(views: list[tuple[str, str]]) -> list[tuple[str, str]]:
    names = {name for name, _ in views}
    needs = {name: {other for other in names - {name}
                    if re.search(rf"\b{other}\b", _without_comments(body))}
             for name, body in views}
    ordered: list[tuple[str, str]] = []
    pending = list(views)
    while pending:
        done = {n for n, _ in ordered}
        ready = [(n, b) for n, b in pending if needs[n] <= done]
        if not ready:
            raise ValueError(f"views that name each other in a cycle: "
                             f"{', '.join(n for n, _ in pending)}")
        ordered += ready
        pending = [v for v in pending if v not in ready]
    return ordered


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
