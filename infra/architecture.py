"""The layers of guardstream and the imports between them, read from the source.

``docs/architecture.md`` is :func:`architecture_markdown` of the repository, and
``tests/infra/test_architecture.py`` keeps the two equal and :func:`violations`
empty. After changing imports, rewrite the page with::

    python -m guardstream.infra.architecture

A developer tool: it parses the modules with :mod:`ast` and imports none of them,
so it also reads a tree that does not import. It takes the package folders from
``pyproject.toml``, so it needs the repository (an installed wheel has neither
``pyproject.toml`` nor ``docs/``).

Every import statement is an arrow, wherever it stands: at module level, under
``if TYPE_CHECKING:``, or inside a function (a lazy import). The entry point
``guardstream/cli.py`` imports the command modules by name through ``importlib``:
the names in its ``COMMAND_MODULES`` are its arrows.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # infra/ is a top-level folder of the repository
PAGE = Path("docs") / "architecture.md"
ENTRY_POINT = "guardstream.cli"
REGISTERED_BY_NAME = "COMMAND_MODULES"  # the entry point's tuple of the module names it imports


@dataclass(frozen=True)
class Layer:
    name: str
    packages: tuple[str, ...]
    holds: str


# Bottom to top. A package may import its own modules and any package of a lower layer;
# it never imports another package of its own layer, except by an arrow of SIDEWAYS.
LAYERS = (
    Layer("core", ("core",), "`guardstream/` without `cli.py`: settings, topic catalog, typed records and "
                             "their names, refusals, Kafka client configuration and mechanics, observability, "
                             "errors, stop handlers, console output"),
    Layer("schemas", ("schemas",), "`schemas/`: the Avro schemas, their registry and codec, contract checks, "
                                   "the dead-letter builder"),
    Layer("components", ("connectors", "streams", "sinks", "gateway", "notifier"),
          "`connectors/` (MQTT bridge, device commands, simulator), `streams/` (the worker), "
          "`sinks/` (PostgreSQL), `gateway/` (WebSocket feed), `notifier/` (email, webhook, SMS)"),
    Layer("operator tools", ("infra",), "`infra/`: the local stack and its supervisor, topics and migrations, "
                                        "operator commands (`infra/ops/`), the lag exporter (`infra/lag/`)"),
    Layer("entry point", ("cli",), "`guardstream/cli.py`: registers every command module"),
)

# The sideways arrows between components that the design allows, and why.
SIDEWAYS: Mapping[tuple[str, str], str] = {
    ("connectors", "streams"): "the device simulator walks guards in and out of fences with the "
                               "worker's geofence maths",
}

_FOLDER_PACKAGES = frozenset(p for layer in LAYERS for p in layer.packages) - {"core", "cli"}
_LAYER_OF = {package: rank for rank, layer in enumerate(LAYERS) for package in layer.packages}

# Where an import stands, strongest first; every kind is an arrow.
MODULE_LEVEL = "module level"
TYPE_CHECKING_ONLY = "type checking"  # under `if TYPE_CHECKING:`
LAZY = "lazy"  # inside a function
BY_NAME = "by name"  # a name in the entry point's COMMAND_MODULES, imported through importlib
KINDS = (MODULE_LEVEL, TYPE_CHECKING_ONLY, LAZY, BY_NAME)


@dataclass(frozen=True, order=True)
class Import:
    importer: str  # dotted module name, e.g. guardstream.streams.worker
    imported: str  # dotted module name (a package's own name for its __init__)
    how: str = MODULE_LEVEL


def package_of(module: str) -> str:
    """The graph node of a guardstream module: ``cli``, ``core`` or its top-level folder's name."""
    if module == ENTRY_POINT:
        return "cli"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in _FOLDER_PACKAGES:
        return parts[1]
    return "core"


# -- reading the source ------------------------------------------------------------------------

def modules_of(root: Path) -> dict[str, Path]:
    """Every module setuptools installs from ``root``, by dotted name (``pyproject.toml`` names the folders)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders: Mapping[str, str] = config["package-dir"]
    modules = {}
    for package in config["packages"]:
        top = max((name for name in folders if package == name or package.startswith(name + ".")), key=len)
        folder = root / folders[top] / Path(*package[len(top):].split(".")[1:])
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def imports_in(module: str, source: str, known: Iterable[str], *, is_package: bool = False) -> set[Import]:
    """The guardstream modules that ``source``, the text of ``module``, imports.

    ``known`` names every module, so that ``from guardstream.infra import topics`` is an
    import of the module ``guardstream.infra.topics`` and ``from guardstream.settings import
    Settings`` one of ``guardstream.settings``. Imports of other libraries are left out.
    """
    known = frozenset(known)
    tree = ast.parse(source)
    found = set()
    for node, how in _import_statements(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _absolute(module, node.module, node.level, is_package)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        found.update(Import(module, target, how) for target in targets
                     if target == "guardstream" or target.startswith("guardstream."))
    if module == ENTRY_POINT:
        found.update(Import(module, name, BY_NAME) for name in _registered_by_name(tree))
    return found


def _import_statements(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it stands (inside a function wins over TYPE_CHECKING)."""
    def walk(nodes: Iterable[ast.AST], how: str) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, how
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(ast.iter_child_nodes(node), LAZY)
            elif how == MODULE_LEVEL and isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, TYPE_CHECKING_ONLY)
                yield from walk(node.orelse, how)
            else:
                yield from walk(ast.iter_child_nodes(node), how)
    return walk(tree.body, MODULE_LEVEL)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(module: str, name: str | None, level: int, is_package: bool) -> str:
    """The module a ``from`` import names, a relative one resolved against ``module``."""
    if level == 0:
        return name or ""
    parts = module.split(".")
    base = parts[:len(parts) - level + (1 if is_package else 0)]
    return ".".join(base + ([name] if name else []))


def _registered_by_name(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == REGISTERED_BY_NAME
                                                for t in node.targets):
            return [e.value for e in ast.walk(node.value)
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def read_imports(root: Path = ROOT) -> tuple[dict[str, Path], set[Import]]:
    """The modules under ``root``, and every import of a guardstream module they make."""
    modules = modules_of(root)
    found = set()
    for name, path in modules.items():
        found |= imports_in(name, path.read_text(), modules, is_package=path.stem == "__init__")
    return modules, found


# -- the rules ---------------------------------------------------------------------------------

def allowed(importer: str, imported: str) -> bool:
    """May package ``importer`` import package ``imported``?"""
    if importer == imported or (importer, imported) in SIDEWAYS:
        return True
    return _LAYER_OF[imported] < _LAYER_OF[importer]


def violations(imports: Iterable[Import]) -> list[str]:
    """The imports that break the layering, one line each. Beyond the core, the entry point
    imports only the command modules it names in COMMAND_MODULES."""
    broken = []
    for imp in sorted(imports):
        source, target = package_of(imp.importer), package_of(imp.imported)
        if source == "cli" and target != "core" and imp.how != BY_NAME:
            broken.append(f"{imp.importer} imports {imp.imported}: the entry point imports a command module "
                          f"only by its name in {REGISTERED_BY_NAME}")
        elif not allowed(source, target):
            broken.append(f"{imp.importer} imports {imp.imported}{_marked(imp.how)}: "
                          f"{source} may not import {target}")
    return broken


# -- the page ----------------------------------------------------------------------------------

def architecture_markdown(root: Path = ROOT) -> str:
    """``docs/architecture.md``: the layers, the package graph and each package's imports from the others."""
    modules, imports = read_imports(root)
    return page({name: path.relative_to(root).as_posix() for name, path in modules.items()}, imports)


def page(paths: Mapping[str, str], imports: Iterable[Import]) -> str:
    """The page for modules at ``paths`` (dotted name -> path in the repository) making ``imports``."""
    pairs = _strongest(imp for imp in imports if package_of(imp.importer) != package_of(imp.imported))
    lines = [
        "# Architecture",
        "",
        "Generated from the code by `python -m guardstream.infra.architecture` (`infra/architecture.py`,",
        "which reads the source with `ast`); `tests/infra/test_architecture.py` keeps this page equal to",
        "its output and checks the rules below. Change the code or the rules, then run it again.",
        "",
        "## Layers",
        "",
        "Top to bottom. A package imports its own modules and the packages of lower layers; never one of a",
        "higher layer, nor another of its own layer except by an allowed sideways arrow. Every import",
        "counts, also one inside a function. The entry point imports the core, and the command modules",
        f"named in its `{REGISTERED_BY_NAME}` through `importlib`, each of which registers its subcommands.",
        "",
        "| Layer | Packages | Holds |",
        "|---|---|---|",
        *[f"| {layer.name} | {', '.join(layer.packages)} | {layer.holds} |" for layer in reversed(LAYERS)],
        "",
        "Allowed sideways arrows:",
        "",
        *[f"- {a} -> {b}: {why}" for (a, b), why in sorted(SIDEWAYS.items())],
        "",
        "## Package import graph",
        "",
        "An arrow points from the importing package to the imported one. Its label counts the module",
        "imports behind it (pairs of importing and imported module), with those made only lazily (inside",
        "a function), only for type checking, or by name. A dotted arrow breaks the rules.",
        "",
        *_diagram(pairs),
        "",
        "## Modules and what they import from other packages",
        "",
        "Marked: imported only inside a function (lazy), only for type checking, or by name.",
    ]
    by_importer: dict[str, list[Import]] = defaultdict(list)
    for imp in pairs:
        by_importer[imp.importer].append(imp)
    for layer in reversed(LAYERS):
        for package in layer.packages:
            lines += ["", f"### {package}", "", "| Module | Imports from other packages |", "|---|---|"]
            for name in sorted(m for m in paths if package_of(m) == package):
                listed = ", ".join(f"`{_short(imp.imported)}`{_marked(imp.how)}" for imp in by_importer[name])
                lines.append(f"| `{paths[name]}` | {listed or '-'} |")
    return "\n".join(lines) + "\n"


def _strongest(imports: Iterable[Import]) -> list[Import]:
    """One import per (importer, imported) pair, of the strongest kind it is made in."""
    best: dict[tuple[str, str], Import] = {}
    for imp in imports:
        held = best.get((imp.importer, imp.imported))
        if held is None or KINDS.index(imp.how) < KINDS.index(held.how):
            best[(imp.importer, imp.imported)] = imp
    return sorted(best.values())


def _diagram(pairs: list[Import]) -> list[str]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for imp in pairs:
        edges[(package_of(imp.importer), package_of(imp.imported))].append(imp.how)
    lines = ["```mermaid", "flowchart TB"]
    for rank, layer in reversed(list(enumerate(LAYERS))):
        lines += [f"    subgraph layer{rank}[{layer.name}]", "        direction LR",
                  *[f"        {package}" for package in layer.packages], "    end"]
    for (source, target), kinds in sorted(edges.items()):
        arrow = "-->" if allowed(source, target) or source == "cli" else "-.->"
        lines.append(f'    {source} {arrow}|"{_count(kinds)}"| {target}')
    lines.append("```")
    return lines


def _count(kinds: list[str]) -> str:
    """``12``, ``12 (3 lazy)``, or ``3 by name`` when every one is of one kind other than module level."""
    weaker = [(kind, kinds.count(kind)) for kind in KINDS[1:] if kind in kinds]
    if len(weaker) == 1 and weaker[0][1] == len(kinds):
        return f"{len(kinds)} {weaker[0][0]}"
    return f"{len(kinds)}" + (f" ({', '.join(f'{n} {kind}' for kind, n in weaker)})" if weaker else "")


def _marked(how: str) -> str:
    return "" if how == MODULE_LEVEL else f" ({how})"


def _short(module: str) -> str:
    return module.removeprefix("guardstream.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guardstream.infra.architecture",
                                     description="Rewrite docs/architecture.md from the imports in the code.")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    text = architecture_markdown(ROOT)
    path = ROOT / PAGE
    current = path.read_text() if path.exists() else None
    for line in violations(read_imports(ROOT)[1]):
        print(f"not allowed: {line}", file=sys.stderr)
    if args.check:
        print(f"{PAGE}: {'up to date' if current == text else 'out of date'}")
        return 0 if current == text else 1
    if current != text:
        path.write_text(text)
    print(f"{PAGE}: {'unchanged' if current == text else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
