"""References from a registry entry to the code that implements it.

A registry (spaces, kernels, task sources, estimation methods) is read by early stages, which
must not import the later stage whose code implements an entry: ``ibdb --help`` and ``ibdb
validate`` never load torch. So an entry names its implementation, as ``"package.module:name"``
(imported on first use) or as the object itself (a test's or a user's own function), and the
stage that calls it resolves the reference with :func:`resolve`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Reference = str | Callable[..., Any] | type
"""``"package.module:name"`` or the object it names."""


def resolve(reference: Reference) -> Any:
    """The object ``reference`` names (importing its module the first time)."""
    if not isinstance(reference, str):
        return reference
    module, sep, name = reference.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"reference {reference!r}: expected 'package.module:name'")
    return getattr(importlib.import_module(module), name)
