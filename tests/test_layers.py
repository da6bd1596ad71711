"""The package's imports point down: each component imports only itself and components in lower layers.

A lower layer that needs to report upward takes an interface (`rerankd.telemetry`)
instead. Every import counts, at any depth (inside functions too) and relative ones
included, since a lazy import is still a door in the ceiling.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rerankd"

# Lowest first. A component is a subpackage or a top-level module of rerankd; one that doesn't exist is no error.
LAYERS: dict[str, int] = {
    "errors": 0, "telemetry": 0, "corpus": 0,
    "settings": 1, "logs": 1,
    "model": 2, "cache": 2,
    "engine": 3,
    "reranker": 4, "export": 4, "bench": 4,
    "server": 5, "testing": 5, "evaluation": 5,
    "cli": 6,
}
# Runtime code never depends on the test fixtures; the CLI's `make-test-model` writes one.
MAY_IMPORT_TESTING = {"cli"}


def component_of(path: Path, package: Path = PACKAGE) -> str | None:
    """The component a module belongs to; None for the package root `rerankd/__init__.py`."""
    parts = path.relative_to(package).with_suffix("").parts
    if parts == ("__init__",):
        return None
    return parts[0]


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[int, str, str]]:
    """(line, absolute dotted module, the import as written) of every import in the file.

    `from M import a, b` gives M.a and M.b, since a and b may be modules.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # A relative import starts from the package the file is in (for an __init__.py, the package it makes).
    here = [package.name, *path.relative_to(package).parent.parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, f"import {alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            written = "." * node.level + (node.module or "")
            found += [(node.lineno, f"{base}.{alias.name}", f"from {written} import {alias.name}") for alias in node.names]
    return found


def target_component(module: str, package: Path = PACKAGE) -> str | None:
    """The rerankd component `module` belongs to; None outside rerankd and for the bare package root
    (`from rerankd import __version__`)."""
    parts = module.split(".")
    if parts[0] != package.name or len(parts) == 1:
        return None
    name = parts[1]
    if name in LAYERS or (package / name).is_dir() or (package / f"{name}.py").is_file():
        return name
    return None  # a name defined in rerankd/__init__.py


def violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        importer = component_of(path, package)
        if importer is None:
            continue
        where = path.relative_to(package.parent).as_posix()
        if importer not in LAYERS:
            found.append(f"{where}: component {importer!r} has no layer in tests/test_layers.py")
            continue
        for line, module, statement in imported_modules(path, package):
            target = target_component(module, package)
            if target is None or target == importer:
                continue
            if target not in LAYERS:
                found.append(f"{where}:{line}: {statement} ({target!r} has no layer)")
            elif target == "testing" and importer not in MAY_IMPORT_TESTING:
                found.append(f"{where}:{line}: {statement} (only {', '.join(sorted(MAY_IMPORT_TESTING))} "
                             "may import rerankd.testing)")
            elif LAYERS[target] >= LAYERS[importer]:
                found.append(f"{where}:{line}: {statement} ({importer}, layer {LAYERS[importer]}, imports "
                             f"{target}, layer {LAYERS[target]})")
    return found


def test_every_import_points_to_a_lower_layer() -> None:
    found = violations()
    assert not found, "imports that point up or sideways:\n" + "\n".join(found)


def test_the_check_sees_lazy_relative_and_from_package_imports(tmp_path: Path) -> None:
    package = tmp_path / "rerankd"
    for name, source in {
        "__init__.py": "from rerankd.cli import main\n",  # the package root is exempt
        "errors.py": "from rerankd import __version__\n",  # the bare root is fine from anywhere
        "settings.py": "import rerankd.errors\n",
        "cache/__init__.py": "",
        "cache/store.py": "def f():\n    from ..server import metrics\n",
        "model/__init__.py": "from . import loading\nfrom .loading import x\n",
        "model/loading.py": "from rerankd import reranker\n",
        "server/__init__.py": "import rerankd.testing.fixture as fixture\n",
        "cli/__init__.py": "from rerankd.testing import make_test_model\n",
        "mystery.py": "",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(source, encoding="utf-8")

    assert violations(package) == [
        "rerankd/cache/store.py:2: from ..server import metrics (cache, layer 2, imports server, layer 5)",
        "rerankd/model/loading.py:1: from rerankd import reranker (model, layer 2, imports reranker, layer 4)",
        "rerankd/mystery.py: component 'mystery' has no layer in tests/test_layers.py",
        "rerankd/server/__init__.py:1: import rerankd.testing.fixture (only cli may import rerankd.testing)",
    ]
