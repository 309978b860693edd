"""Name-to-factory registries, so that a config can name encoders, fusions, methods and data sets."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from modalbalance.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories, filled with the ``register`` decorator.

    ``kind`` names what the registry contains (``"fusion"``) and appears in
    error messages, for example ``fusion must be one of concat, sum; got 'conat'``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise ConfigError(unknown_choice_message(self.kind, name, self.names()))
        return self._entries[name]

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def unknown_choice_message(kind: str, value: object, choices: list[str]) -> str:
    """Format ``<kind> must be one of a, b, c; got 'x'`` plus a close match, if any."""
    message = f"{kind} must be one of {', '.join(choices)}; got {value!r}"
    close = difflib.get_close_matches(str(value), choices, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message
