"""The ingest routes' dependencies run on the event loop, not in FastAPI's thread pool.

FastAPI runs a plain ``def`` dependency through ``run_in_threadpool``: a thread hop per
dependency and request, which cost an upload more CPU than its SHA-256 and its XADD together
(loadtest/upload_cpu_bench.py). Dependencies here only read the app's state, so all are async.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from kubemate_ingest.main import create_app


def dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from dependencies(sub)


def test_no_ingest_dependency_is_sent_to_the_thread_pool() -> None:
    sync: set[str] = set()
    checked = 0
    for route in iter_route_contexts(create_app().router.routes):
        dependant = getattr(route, "dependant", None)
        if not isinstance(dependant, Dependant):
            continue
        for sub in dependencies(dependant):
            checked += 1
            if sub.call is not None and not inspect.iscoroutinefunction(sub.call):
                sync.add(f"{route.path}: {getattr(sub.call, '__qualname__', sub.call)}")
    assert checked, "the ingest routes declare dependencies"
    assert sorted(sync) == []
