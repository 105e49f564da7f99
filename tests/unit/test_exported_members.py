"""Every package's ``__all__`` is exactly what it really exports, sorted (httpx
``tests/test_exported_members.py``), rather than a copy of each list per package.

What a package exports is read from its ``__init__.py`` with ``ast``: the names it imports
from weir's own packages (type-only imports included: that is how a lazily loaded name is
declared) and the public names it defines. Names it takes from elsewhere (``typing``,
``importlib``) are not exports. Sorted is ruff's RUF022 order: constants, then classes,
then the rest.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("schemas", "engines", "service", "replay", "bench", "chaos")
PACKAGES = sorted(
    ".".join(init.parent.relative_to(REPO).parts)
    for top in FIRST_PARTY
    for init in (REPO / top).rglob("__init__.py")
)


def _public(name: str) -> bool:
    return not name.startswith("_")


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements that bind module names: ``body`` and the branches of its ``if`` and
    ``try`` blocks (``if TYPE_CHECKING:``), not the insides of functions or classes."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _module_level(node.body) + _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _module_level(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                out += _module_level(handler.body)
    return out


def exports(source: str) -> set[str]:
    """The public names a package's ``__init__`` source takes from weir or defines."""
    names: set[str] = set()
    for node in _module_level(ast.parse(source).body):
        if isinstance(node, ast.ImportFrom) and (
            node.level > 0 or (node.module or "").split(".")[0] in FIRST_PARTY
        ):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if _public(n) and n != "__all__"}


def ruff_sorted(names: set[str]) -> list[str]:
    """``names`` in RUF022 (isort-style) order: SCREAMING_CASE, CamelCase, then the rest."""

    def key(name: str) -> tuple[int, str]:
        if name.isupper() and len(name) > 1:
            return 0, name
        return (1 if name[0].isupper() else 2), name

    return sorted(names, key=key)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_what_the_package_exports_sorted(package: str) -> None:
    """``__all__`` lists exactly the package's exports, in order, each one importable."""
    init = REPO.joinpath(*package.split("."), "__init__.py")
    want = ruff_sorted(exports(init.read_text()))
    mod = importlib.import_module(package)
    assert list(getattr(mod, "__all__", [])) == want
    for name in want:  # lazily loaded names resolve too
        assert getattr(mod, name) is not None, name


def test_packages_are_found() -> None:
    """The parametrization covers the packages with a public surface."""
    assert {"schemas", "engines", "service", "service.scheduler", "replay"} <= set(PACKAGES)


def test_exports_are_read_from_the_init_source() -> None:
    """Module-level first-party and type-only imports and public definitions count;
    foreign imports, a function's imports, private names and ``__all__`` do not."""
    source = (
        "from __future__ import annotations\n"
        "import importlib\n"
        "from typing import TYPE_CHECKING, Any\n"
        "from service.base import Record, Sink as Out, _hidden\n"
        "from .errors import ServiceError\n"
        "if TYPE_CHECKING:\n"
        "    from engines.onnx import OnnxEngine\n"
        "VERSION = 1\n"
        "_LAZY = {}\n"
        "def load():\n"
        "    from engines.fake import FakeEngine\n"
        "def __getattr__(name): ...\n"
        "__all__ = []\n"
    )
    assert ruff_sorted(exports(source)) == [
        "VERSION",
        "OnnxEngine",
        "Out",
        "Record",
        "ServiceError",
        "load",
    ]
