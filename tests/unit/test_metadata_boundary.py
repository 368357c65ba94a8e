"""Nothing outside ``kubemate.metadata`` reaches around its repositories to the database: no use of
an ``engine`` attribute, no SQLAlchemy import. A caller that needs a query asks for a repository
method, so transactions, locks and the error mapping stay in one place."""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METADATA = ROOT / "libs" / "kubemate" / "metadata"
# Tests may look inside the database (counting BEGINs, reading a hashed column).
SKIPPED_DIRS = {"tests", "node_modules", "__pycache__"}


def reach_arounds(source: str) -> list[str]:
    """What in ``source`` goes past the metadata repositories, as "line: what"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("engine", "_engine"):
            # A class's own private ``_engine`` (an embedding model's) is not the database's.
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr == "engine" or not own:
                found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "sqlalchemy"
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            found.append(f"{node.lineno}: from {node.module} import")
    return sorted(found, key=lambda item: int(item.split(":")[0]))


def source_files() -> list[Path]:
    files = []
    for directory, subdirs, names in os.walk(ROOT):
        here = Path(directory)
        subdirs[:] = [
            d
            for d in subdirs
            if not d.startswith(".") and d not in SKIPPED_DIRS and here / d != METADATA
        ]
        files += [here / name for name in names if name.endswith(".py")]
    return files


def test_the_check_sees_the_reach_arounds_it_forbids() -> None:
    source = (
        "from sqlalchemy.orm import Session\n"
        "import sqlalchemy\n"
        "with store.engine.connect() as c: pass\n"
        "Session(store.database._engine)\n"
        "store.documents.get('t', 'd')\n"
        "self._engine.encode(texts)\n"
    )
    assert reach_arounds(source) == [
        "1: from sqlalchemy.orm import",
        "2: import sqlalchemy",
        "3: .engine",
        "4: ._engine",
    ]


def test_no_module_outside_the_metadata_package_touches_the_database_directly() -> None:
    files = source_files()
    assert any(p.is_relative_to(ROOT / "services") for p in files)  # the walk found the tree
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in files
        if (found := reach_arounds(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
