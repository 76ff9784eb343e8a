"""Old module paths (before the package was split into subpackages) keep importing, with a DeprecationWarning.

``import sentence_transformers_hybrid.cka`` (and ``from sentence_transformers_hybrid.convert import ...`` etc.) give
a module whose attributes are looked up, in order, in the new modules listed in :data:`MOVED`. Nothing else in the
package imports these paths; new code should use the new ones (``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

PACKAGE = "sentence_transformers_hybrid"

#: old module (relative to the package) -> the new modules its names now live in, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "backbones": ("models.m2m100",),
    "beir_interop": ("evaluation.beir",),
    "cka": ("metrics.cka", "evaluation.cka"),
    "convert": ("models.e5", "models.trim", "models.frozen", "models.trie"),
    "data.jsonl": ("data.pairs",),
    "data.sources": ("data.pairs", "data.squad"),
    "evaluation_cka": ("evaluation.cka",),
    "frozen": ("models.frozen",),
    "hub": ("experiment.hub",),
    "report": ("experiment.report",),
    "sampling.trainer": ("sampling.factory",),
}


class _MovedModule(types.ModuleType):
    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved: see {', '.join(f'{PACKAGE}.{t}' for t in targets)}.")
        self.__targets = tuple(f"{PACKAGE}.{t}" for t in targets)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r} (it moved to {self.__targets})")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self.__targets:
            names.update(dir(importlib.import_module(target)))
        return sorted(names)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PACKAGE + ".") or fullname[len(PACKAGE) + 1 :] not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        old = spec.name[len(PACKAGE) + 1 :]
        warnings.warn(
            f"{spec.name} moved to {', '.join(PACKAGE + '.' + t for t in MOVED[old])}; the old path will be removed",
            DeprecationWarning,
            stacklevel=3,
        )
        return _MovedModule(spec.name, MOVED[old])

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install() -> None:
    """Register the finder for the old paths (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
