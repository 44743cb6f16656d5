"""The floor plan holds: every wing imports only its own wing and the wings below it (docs/architecture.md).

Every ``import`` in src/kfnlp counts, including the lazy ones inside functions: a lazy import is still a
dependency, it only moves the moment it is paid for.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Wings from the bottom up; a module belongs to the longest prefix listed. A wing may import its own
# modules and those of any lower wing, never a higher one.
WINGS: list[tuple[str, ...]] = [
    ("kfnlp", "kfnlp.errors", "kfnlp.config", "kfnlp.assets", "kfnlp.sweep", "kfnlp.api_models"),
    ("kfnlp.storage",),
    ("kfnlp.data", "kfnlp.masking", "kfnlp.metrics", "kfnlp.reports", "kfnlp.plots", "kfnlp.registry"),
    ("kfnlp.modeling",),
    ("kfnlp.artifacts", "kfnlp.training"),
    ("kfnlp.stages", "kfnlp.predict", "kfnlp.serving"),
    ("kfnlp.catalog", "kfnlp.refs"),
    ("kfnlp.launch.in_pod", "kfnlp.launch.quick_exit", "kfnlp.launch.allocator", "kfnlp.launch.scale_out"),
    ("kfnlp.components",),
    ("kfnlp.pipelines",),
    ("kfnlp.launch",),
    ("kfnlp.cli", "kfnlp.docs", "kfnlp.__main__"),
]
RANK = {prefix: rank for rank, wing in enumerate(WINGS) for prefix in wing}


def wing(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in RANK:
            return RANK[prefix]
    raise AssertionError(f"{module} belongs to no wing: add it to WINGS and docs/architecture.md")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, module) of every kfnlp module ``path`` imports."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from kfnlp.x import y` may name a module y: count the deepest that is a module
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if is_module(candidate, src) else base))
    return [(line, name) for line, name in found if name == "kfnlp" or name.startswith("kfnlp.")]


def is_module(name: str, src: Path = SRC) -> bool:
    path = src.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


MODULES = sorted(p for p in (SRC / "kfnlp").rglob("*.py"))


def test_every_module_has_a_wing():
    for path in MODULES:
        wing(module_name(path))


def violations(path: Path, src: Path = SRC) -> list[str]:
    here = module_name(path, src)
    return [
        f"{path.relative_to(src.parent)}:{line}: {here} (wing {wing(here)}) imports {name} (wing {wing(name)})"
        for line, name in imports(path, src)
        if wing(name) > wing(here)
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path):
    found = violations(path)
    assert not found, "imports against the floor plan:\n" + "\n".join(found)


def test_the_check_catches_upward_imports(tmp_path):
    """The rule is not vacuous: upward imports in any spelling (lazy, relative, ``from kfnlp import x``) are reported."""
    src = tmp_path / "src"
    for module in (
        "kfnlp/__init__",
        "kfnlp/cli/__init__",
        "kfnlp/storage/__init__",
        "kfnlp/storage/bad",
        "kfnlp/stages/ok",
    ):
        (src / f"{module}.py").parent.mkdir(parents=True, exist_ok=True)
        (src / f"{module}.py").touch()
    bad = src / "kfnlp/storage/bad.py"
    bad.write_text(
        "from kfnlp import cli\n\ndef f():\n    from ..cli import main\n    import kfnlp.cli\n", encoding="utf-8"
    )
    assert [v.split(": ", 1)[0] for v in violations(bad, src)] == [
        "src/kfnlp/storage/bad.py:1",
        "src/kfnlp/storage/bad.py:4",
        "src/kfnlp/storage/bad.py:5",
    ]
    ok = src / "kfnlp/stages/ok.py"
    ok.write_text("from kfnlp.storage import bad\nfrom kfnlp import errors\n", encoding="utf-8")
    assert violations(ok, src) == []
