"""The one shape every registry of ibdb has: entries by key, in registration order, that a
test or a user can add to for a while (``added``), and a lookup whose failure names the known
keys. The estimation methods (:mod:`ibdb.core.methods`) and the spec's kinds (spaces, kernels,
task sources: :mod:`ibdb.spec.kinds`) are registries of this shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from ibdb.core.errors import IbdbError

E = TypeVar("E")


class Registry(Generic[E]):
    """Entries keyed by ``key(entry)``. ``unknown(key, known)`` makes the error :meth:`get`
    raises for a key that is not registered."""

    def __init__(self, entries: list[E], *, key: Callable[[E], str],
                 unknown: Callable[[str, tuple[str, ...]], IbdbError]) -> None:
        self._key, self._unknown = key, unknown
        self._entries: dict[str, E] = {}
        for entry in entries:
            self.register(entry)

    def register(self, entry: E) -> None:
        key = self._key(entry)
        if key in self._entries:
            raise ValueError(f"{key!r} is registered already")
        self._check(entry)
        self._entries[key] = entry

    def _check(self, entry: E) -> None:
        """Raise ValueError when ``entry`` cannot be registered (a hook for subclasses)."""

    def unregister(self, key: str) -> None:
        del self._entries[key]

    @contextmanager
    def added(self, entry: E) -> Iterator[E]:
        """Register ``entry`` for the duration of a ``with`` block (tests, experiments)."""
        self.register(entry)
        try:
            yield entry
        finally:
            self.unregister(self._key(entry))

    def __iter__(self) -> Iterator[E]:
        return iter(list(self._entries.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def get(self, key: str) -> E:
        try:
            return self._entries[key]
        except KeyError:
            raise self._unknown(key, self.keys()) from None
