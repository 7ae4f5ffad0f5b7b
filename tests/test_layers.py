"""Imports go one way: jobs -> recommenders -> extractors -> pipeline, and product code never reaches into tests,
benchmarks or another module's private names.

Every product module's imports are read with `ast`, those inside functions too (a lazy import is still a
dependency). Same-layer imports are not checked here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO

# Lowest first: a package may import only from its own layer or the ones before it.
LAYERS = ("pipeline", "extractors", "recommenders", "jobs")
# Never imported by product code.
OUTSIDE = ("tests", "benchmarks")
# The one private import left, between two modules of one layer: it goes when recommenders/train.py is split into
# a training loop that both the local and the Ray Train fit import.
KNOWN_PRIVATE_IMPORTS = {("recommenders/distributed.py", "recommenders.train", "_fit")}


@dataclass(frozen=True)
class Import:
    """One imported name: `module` is the dotted module, `name` the name taken from it (None for `import x`)."""

    path: Path
    line: int
    module: str
    name: str | None

    def __str__(self) -> str:
        code = f"import {self.module}" if self.name is None else f"from {self.module} import {self.name}"
        return f"{self.path}:{self.line}: {code}"


def product_modules(root: Path) -> list[Path]:
    return sorted(path for layer in LAYERS for path in (root / layer).rglob("*.py"))


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path, path: Path) -> list[Import]:
    """Every import of the file, with relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(root, path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(path.relative_to(root), node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [Import(path.relative_to(root), node.lineno, module, alias.name) for alias in node.names]
    return found


def layer_of(module: str) -> str:
    return module.split(".")[0]


def upward_imports(root: Path) -> list[Import]:
    """Imports of a higher layer from a lower one, and of tests or benchmarks from anywhere in the product."""
    bad = []
    for path in product_modules(root):
        own = LAYERS.index(layer_of(module_name(root, path)))
        for found in imports(root, path):
            target = layer_of(found.module)
            if target in OUTSIDE or (target in LAYERS and LAYERS.index(target) > own):
                bad.append(found)
    return bad


def private_imports(root: Path) -> list[Import]:
    """`from <another project module> import _name`: a private name used outside the module that owns it."""
    bad = []
    for path in product_modules(root):
        own = module_name(root, path)
        for found in imports(root, path):
            if (layer_of(found.module) in LAYERS and found.module != own and found.name is not None
                    and found.name.startswith("_")):
                bad.append(found)
    return bad


def test_no_layer_imports_a_higher_one() -> None:
    bad = upward_imports(REPO)
    assert not bad, "imports against the layer order " + " -> ".join(reversed(LAYERS)) + ":\n" + "\n".join(
        map(str, bad))


def test_no_product_module_imports_a_private_name_of_another() -> None:
    bad = [found for found in private_imports(REPO)
           if (str(found.path), found.module, found.name) not in KNOWN_PRIVATE_IMPORTS]
    assert not bad, "private names imported across modules:\n" + "\n".join(map(str, bad))


def test_the_checks_see_every_kind_of_import(tmp_path: Path) -> None:
    """A planted upward import of each form (top level, in a function, relative) is found, with its line."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "config.py").write_text("import json\nfrom pipeline import schema\n")
    (tmp_path / "pipeline" / "store.py").write_text("import jobs.cli\n")
    (tmp_path / "extractors" / "embed.py").write_text("def f():\n    from recommenders.data import Split\n")
    (tmp_path / "extractors" / "sub").mkdir()
    (tmp_path / "extractors" / "sub" / "__init__.py").write_text("from ..embed import _helper\nfrom . import x\n")
    (tmp_path / "recommenders" / "data.py").write_text("from tests.helpers import REPO\n")
    (tmp_path / "jobs" / "cli.py").write_text("import benchmarks.common\nfrom pipeline.store import _kill\n")
    assert sorted(map(str, upward_imports(tmp_path))) == [
        "extractors/embed.py:2: from recommenders.data import Split",
        "jobs/cli.py:1: import benchmarks.common",
        "pipeline/store.py:1: import jobs.cli",
        "recommenders/data.py:1: from tests.helpers import REPO",
    ]
    assert sorted(map(str, private_imports(tmp_path))) == [
        "extractors/sub/__init__.py:1: from extractors.embed import _helper",
        "jobs/cli.py:2: from pipeline.store import _kill",
    ]
