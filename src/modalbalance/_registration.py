"""Import the modules that register built-in entries, skipping ones not present in this install."""

from __future__ import annotations

import importlib


def import_modules(package: str, names: tuple[str, ...]) -> None:
    for name in names:
        module = f"{package}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
