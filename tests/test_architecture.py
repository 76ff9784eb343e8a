"""The package's layout rules (docs/architecture.md), checked on the source: data flows one way, no import cycle,
no private name imported across modules, no stack-frame inspection, no ``datasets`` internals."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "sentence_transformers_hybrid"
PKG = "sentence_transformers_hybrid"

# layer of each top-level module / subpackage: a module may import only its own layer's modules or lower layers
LAYERS = {
    "_utils": 0, "_compile": 0, "_packed": 0, "_dropout": 0, "metrics": 0,
    "data": 1,
    "sampling": 2, "losses": 2, "models": 2, "translate": 2, "index": 2,
    "evaluation": 3,
    "experiment": 4,
    "testing": 5, "cli": 5, "__main__": 5, "_compat": 5, "__init__": 5,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, typing_too: bool = False) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every run-time import of the package in ``path``, at any depth (imports
    inside functions count; ``if TYPE_CHECKING:`` blocks count only with ``typing_too``: a type checker and a reader
    follow them, the interpreter does not)."""
    return _imports_in(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py", typing_too)


def _imports_in(source: str, mod: str, is_pkg: bool, typing_too: bool = False) -> list[tuple[str, list[str], int]]:
    """:func:`_imports` of the source text of module ``mod``."""
    out = []
    tree = ast.parse(source)
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only and not typing_too:  # annotations only: never imported at run time
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == PKG or target.startswith(PKG + "."):
                names = [a.name for a in node.names]
                # "from . import x" imports the submodule x
                if not node.module:
                    out += [(f"{target}.{n}", [], node.lineno) for n in names]
                else:
                    out.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith(PKG + ".")]
    return out


FILES = sorted(ROOT.rglob("*.py"))
MODULES = {_module_name(f): f for f in FILES}


def _resolve(target: str) -> str:
    """The module ``target`` names (a module, or a package's __init__)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    assert {_top(m) for m in MODULES} <= set(LAYERS), {_top(m) for m in MODULES} - set(LAYERS)


def test_data_flows_one_way():
    bad = []
    for mod, path in MODULES.items():
        for target, _, line in _imports(path):
            t = _resolve(target)
            if LAYERS[_top(t)] > LAYERS[_top(mod)]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} ({_top(mod)}) imports {t} ({_top(t)})")
    assert not bad, "\n".join(bad)


def test_metrics_import_nothing_of_ours():
    for mod, path in MODULES.items():
        if _top(mod) == "metrics":
            others = [t for t, _, _ in _imports(path) if _top(_resolve(t)) != "metrics"]
            assert not others, (mod, others)


def _find_cycle(typing_too: bool) -> str | None:
    """The first import cycle among the package's modules (``a -> b -> a``), or ``None``."""
    graph = {m: {_resolve(t) for t, _, _ in _imports(p, typing_too)} - {m} for m, p in MODULES.items()}
    # a package's __init__ importing its own submodules is how it re-exports them, not a cycle of logic
    for m in graph:
        graph[m] = {t for t in graph[m] if not (MODULES[m].name == "__init__.py" and t.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> str | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return " -> ".join(stack[stack.index(t):] + [t])
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _find_cycle(typing_too=False)
    assert cycle is None, f"import cycle: {cycle}"


def test_no_import_cycle_counting_type_only_imports():
    """``if TYPE_CHECKING:`` imports never run, but a type checker and a reader follow them: no cycle there either
    (a ``typing.Protocol`` of what one module reads of another breaks one)."""
    cycle = _find_cycle(typing_too=True)
    assert cycle is None, f"import cycle (type-only imports counted): {cycle}"


def test_type_only_imports_are_edges_of_the_cycle_check_only():
    """The check above can fail: an ``if TYPE_CHECKING:`` import is seen with ``typing_too``, and only then."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..data.corpus import ParallelCorpus\n"
              "from .modes import MODES\n")
    runtime = [t for t, _, _ in _imports_in(source, f"{PKG}.sampling.x", is_pkg=False)]
    every = [t for t, _, _ in _imports_in(source, f"{PKG}.sampling.x", is_pkg=False, typing_too=True)]
    assert runtime == [f"{PKG}.sampling.modes"]
    assert sorted(every) == [f"{PKG}.data.corpus", f"{PKG}.sampling.modes"]


def test_no_private_name_is_imported_across_modules():
    bad = [f"{p.relative_to(ROOT.parent)}:{line} imports {n} from {t}"
           for m, p in MODULES.items() for t, names, line in _imports(p) for n in names
           if n.startswith("_") and _resolve(t) != m]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("needle", ["sys._getframe", "__wrapped__", "._fingerprint", "._indices", "inspect.stack(",
                                    ".data.table"])
def test_no_frame_inspection_or_datasets_internals(needle):
    # ".data.table" is a Dataset's whole backing table, indices mapping ignored: read rows with data.arrow.dataset_table
    hits = [f"{p.relative_to(ROOT.parent)}:{i}" for p in FILES
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if needle in line]
    assert not hits, hits


def test_old_module_paths_still_import_the_same_objects():
    import warnings

    import sentence_transformers_hybrid as sth

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers_hybrid.cka import layerwise_cka, linear_cka
        from sentence_transformers_hybrid.convert import convert_e5_small, trim_vocabulary
        from sentence_transformers_hybrid.data.sources import pairs_to_corpus

        from sentence_transformers_hybrid.sampling.trainer import SamplerConfigCallback, trainer_epoch

    from sentence_transformers_hybrid.sampling import factory

    assert SamplerConfigCallback is sth.SamplerConfigCallback and trainer_epoch is factory.trainer_epoch
    assert linear_cka is sth.linear_cka and layerwise_cka is sth.layerwise_cka
    assert convert_e5_small is sth.convert_e5_small and trim_vocabulary is sth.trim_vocabulary
    assert pairs_to_corpus is sth.pairs_to_corpus


def test_the_package_never_imports_its_own_old_paths():
    from sentence_transformers_hybrid._compat import MOVED

    old = {f"{PKG}.{m}" for m in MOVED}
    bad = [f"{p.relative_to(ROOT.parent)}:{line} imports {t} (moved: {MOVED[t[len(PKG) + 1:]]})"
           for m, p in MODULES.items() for t, _, line in _imports(p, typing_too=True) if t in old]
    assert not bad, "\n".join(bad)
    assert not old & set(MODULES), f"an old path is a module again: {old & set(MODULES)}"


def test_an_old_path_warns_once_imported():
    import importlib
    import sys

    sys.modules.pop(f"{PKG}.sampling.trainer", None)
    with pytest.warns(DeprecationWarning, match="sampling.trainer moved to sentence_transformers_hybrid.sampling.factory"):
        importlib.import_module(f"{PKG}.sampling.trainer")
