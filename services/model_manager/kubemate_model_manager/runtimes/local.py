"""The local llama.cpp runtime: GGUF files in a directory, loaded into this process.

``<directory>/<name>.gguf`` is a model, and ``<name>.gguf.json`` beside it records where it came
from (its SHA-256, size and GGUF metadata). A pull copies a file from the model registry in the
object store (the air-gapped path): into a hidden temporary file in the same directory, hashed
on the way, and renamed into place only when size and SHA-256 match, so a failed or cancelled
pull leaves no file a reader could mistake for a model.

"Running" means loaded here (``llama_cpp.Llama``), with an idle expiry like Ollama's
``keep_alive``: :meth:`LocalGGUFRuntime.expire_idle`, called periodically by the service,
unloads what has not been used for its keep-alive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import anyio

from kubemate.errors import InferenceError, KubemateError, UnknownModel, ValidationFailed
from kubemate.logs import get_logger
from kubemate.model_assignments import LOCAL_RUNTIME
from kubemate.models_config import LocalRuntimeConfig
from kubemate_model_manager.registry.gguf_header import read_gguf_header
from kubemate_model_manager.registry.store import ModelRegistry, RegistryEntry, check_model_name
from kubemate_model_manager.runtimes.base import ModelInfo, PullProgress, RunningModel

log = get_logger(__name__)

SUFFIX = ".gguf"
SIDECAR = ".gguf.json"
CHUNK = 1024 * 1024
PROGRESS_EVERY = 8 * CHUNK


class LoadedHandle(Protocol):
    def close(self) -> None: ...


Loader = Callable[[Path, LocalRuntimeConfig], LoadedHandle]


def llama_cpp_loader(path: Path, config: LocalRuntimeConfig) -> LoadedHandle:
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise InferenceError(
            "llama-cpp-python is not installed: pip install 'kubemate-libs[llamacpp]'"
        ) from exc
    threads = config.threads or os.cpu_count() or 1
    try:
        return Llama(
            model_path=str(path),
            n_ctx=config.context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise InferenceError(f"llama.cpp could not load {path.name}: {exc}") from exc


@dataclass
class _Loaded:
    handle: LoadedHandle
    size: int
    loaded_at: datetime
    expires_at: datetime | None


class LocalGGUFRuntime:
    """Implements :class:`~kubemate_model_manager.runtimes.base.ModelRuntime` on a directory."""

    kind = LOCAL_RUNTIME
    id = LOCAL_RUNTIME

    def __init__(
        self,
        config: LocalRuntimeConfig,
        directory: Path,
        registry: ModelRegistry | None,
        *,
        loader: Loader = llama_cpp_loader,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self.directory = Path(directory)
        self._registry = registry
        self._loader = loader
        self._clock = clock
        self._loaded: dict[str, _Loaded] = {}
        self._lock = asyncio.Lock()
        self._header_cache: dict[tuple[str, int, int], dict[str, Any]] = {}

    # ---- files --------------------------------------------------------------------------------

    def canonical(self, name: str) -> str:
        return name.removesuffix(SUFFIX)

    def path(self, name: str) -> Path:
        return self.directory / f"{check_model_name(self.canonical(name))}{SUFFIX}"

    def _sidecar(self, name: str) -> Path:
        return self.directory / f"{self.canonical(name)}{SIDECAR}"

    def _describe(self, path: Path) -> ModelInfo:
        name = path.name.removesuffix(SUFFIX)
        st = path.stat()
        try:
            meta: dict[str, Any] = json.loads(self._sidecar(name).read_text())
        except (OSError, ValueError):
            meta = self._header_meta(path, st)  # a file dropped in by hand
        return ModelInfo(
            name=name,
            runtime=self.id,
            size=st.st_size,
            digest=f"sha256:{meta['sha256']}" if meta.get("sha256") else None,
            family=meta.get("family"),
            quantization=meta.get("quantization"),
            parameter_size=meta.get("parameter_size"),
            format="gguf",
            modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
            details={"context_length": meta.get("context_length"), "path": str(path)},
        )

    def _header_meta(self, path: Path, st: os.stat_result) -> dict[str, Any]:
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._header_cache:
            try:
                with path.open("rb") as f:
                    header = read_gguf_header(f)
                meta: dict[str, Any] = {
                    "family": header.family,
                    "quantization": header.quantization,
                    "parameter_size": header.parameter_size,
                    "context_length": header.context_length,
                }
            except KubemateError:
                meta = {}
            self._header_cache[key] = meta
        return self._header_cache[key]

    def _scan(self) -> list[ModelInfo]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path.name.startswith(".") or not path.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted while listing
                found.append(self._describe(path))
        return found

    async def installed(self) -> list[ModelInfo]:
        return await anyio.to_thread.run_sync(self._scan)

    async def show(self, name: str) -> ModelInfo:
        path = self.path(name)

        def describe() -> ModelInfo:
            try:
                return self._describe(path)
            except FileNotFoundError:
                raise UnknownModel(f"model {name!r} is not in the local store") from None

        return await anyio.to_thread.run_sync(describe)

    # ---- pull from the registry ---------------------------------------------------------------

    async def pull(self, name: str) -> AsyncGenerator[PullProgress, None]:
        name = self.canonical(name)
        if self._registry is None:
            raise UnknownModel("no model registry is configured for the local runtime")
        registry = self._registry
        entry = await anyio.to_thread.run_sync(registry.get, name)
        if entry.format != "gguf":
            raise ValidationFailed(f"{name} is an {entry.format} file: llama.cpp runs GGUF files")
        yield PullProgress(status="pulling manifest", completed=0, total=entry.size)
        if await anyio.to_thread.run_sync(self._have, entry):
            yield PullProgress(status="success", completed=entry.size, total=entry.size)
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def post(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def copy() -> None:
            try:
                self._copy(registry, entry, lambda done: post("progress", done), cancelled)
                post("done", None)
            except BaseException as exc:  # every failure must reach the waiting generator
                post("error", exc)

        worker = loop.run_in_executor(None, copy)
        status = f"pulling {entry.sha256[:12]}"
        try:
            while True:
                kind, value = await queue.get()
                if kind == "progress":
                    yield PullProgress(status=status, completed=value, total=entry.size)
                elif kind == "done":
                    break
                else:
                    raise value
        finally:
            cancelled.set()
            with contextlib.suppress(BaseException):
                await worker
        yield PullProgress(status="verifying sha256 digest", completed=entry.size, total=entry.size)
        yield PullProgress(status="success", completed=entry.size, total=entry.size)

    def _have(self, entry: RegistryEntry) -> bool:
        try:
            meta = json.loads(self._sidecar(entry.name).read_text())
            return bool(meta.get("sha256") == entry.sha256 and self.path(entry.name).stat().st_size)
        except (OSError, ValueError):
            return False

    def _copy(
        self,
        registry: ModelRegistry,
        entry: RegistryEntry,
        report: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(entry.name)
        partial = self.directory / f".{target.name}.{uuid.uuid4().hex}.partial"
        sha = hashlib.sha256()
        done = 0
        try:
            with registry.open(entry) as source, partial.open("wb") as out:
                reported = 0
                while chunk := source.read(CHUNK):
                    if cancelled.is_set():
                        raise InferenceError(f"the pull of {entry.name} was cancelled")
                    out.write(chunk)
                    sha.update(chunk)
                    done += len(chunk)
                    if done - reported >= PROGRESS_EVERY:
                        report(done)
                        reported = done
                out.flush()
                os.fsync(out.fileno())
            if done != entry.size or sha.hexdigest() != entry.sha256:
                raise InferenceError(
                    f"the registry copy of {entry.name} is damaged: {done} bytes with SHA-256 "
                    f"{sha.hexdigest()}, its manifest says {entry.size} bytes, {entry.sha256}"
                )
            report(done)
            os.replace(partial, target)
            self._write_sidecar(entry)
        finally:
            partial.unlink(missing_ok=True)
        log.info("local_models.pulled", model=entry.name, bytes=done)

    def _write_sidecar(self, entry: RegistryEntry) -> None:
        meta = {
            "sha256": entry.sha256,
            "size": entry.size,
            "family": entry.family,
            "quantization": entry.quantization,
            "parameter_size": entry.parameter_size,
            "context_length": entry.context_length,
            "source": f"registry:{entry.name}",
            "pulled_at": datetime.now(UTC).isoformat(),
        }
        sidecar = self._sidecar(entry.name)
        tmp = sidecar.with_name(f".{sidecar.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, sidecar)

    # ---- delete -------------------------------------------------------------------------------

    async def delete(self, name: str) -> None:
        name = self.canonical(name)
        path = self.path(name)
        async with self._lock:
            loaded = self._loaded.pop(name, None)
        if loaded is not None:
            await anyio.to_thread.run_sync(loaded.handle.close)
        try:
            path.unlink()
        except FileNotFoundError:
            raise UnknownModel(f"model {name!r} is not in the local store") from None
        self._sidecar(name).unlink(missing_ok=True)
        log.info("local_models.deleted", model=name)

    # ---- load, unload, expire -----------------------------------------------------------------

    def _expiry(self, keep_alive_s: float | None) -> datetime | None:
        seconds = self._config.keep_alive_s if keep_alive_s is None else keep_alive_s
        if seconds < 0:
            return None  # kept until unloaded, like Ollama's negative keep_alive
        return self._clock() + timedelta(seconds=seconds)

    async def load(self, name: str, keep_alive_s: float | None = None) -> RunningModel:
        name = self.canonical(name)
        path = self.path(name)
        if not path.is_file():
            raise UnknownModel(f"model {name!r} is not in the local store")
        async with self._lock:
            current = self._loaded.get(name)
            if current is None:
                while len(self._loaded) >= self._config.max_loaded:
                    await self._evict_oldest()
                handle = await anyio.to_thread.run_sync(self._loader, path, self._config)
                current = _Loaded(handle, path.stat().st_size, self._clock(), None)
                self._loaded[name] = current
                log.info("local_models.loaded", model=name, bytes=current.size)
            current.expires_at = self._expiry(keep_alive_s)
            return self._running(name, current)

    async def _evict_oldest(self) -> None:
        name = min(self._loaded, key=lambda n: self._loaded[n].loaded_at)
        loaded = self._loaded.pop(name)
        await anyio.to_thread.run_sync(loaded.handle.close)
        log.info("local_models.evicted", model=name)

    async def unload(self, name: str) -> None:
        name = self.canonical(name)
        async with self._lock:
            loaded = self._loaded.pop(name, None)
        if loaded is None:
            if not self.path(name).is_file():
                raise UnknownModel(f"model {name!r} is not in the local store")
            return
        await anyio.to_thread.run_sync(loaded.handle.close)
        log.info("local_models.unloaded", model=name)

    async def expire_idle(self) -> list[str]:
        """Unload every model whose keep-alive has run out; returns their names."""
        now = self._clock()
        async with self._lock:
            expired = [
                (name, loaded)
                for name, loaded in self._loaded.items()
                if loaded.expires_at is not None and loaded.expires_at <= now
            ]
            for name, _ in expired:
                del self._loaded[name]
        for name, loaded in expired:
            await anyio.to_thread.run_sync(loaded.handle.close)
            log.info("local_models.expired", model=name)
        return [name for name, _ in expired]

    def _running(self, name: str, loaded: _Loaded) -> RunningModel:
        return RunningModel(
            name=name,
            runtime=self.id,
            size=loaded.size,
            expires_at=loaded.expires_at,
            loaded_at=loaded.loaded_at,
        )

    async def running(self) -> list[RunningModel]:
        await self.expire_idle()
        return [self._running(name, loaded) for name, loaded in sorted(self._loaded.items())]

    async def aclose(self) -> None:
        async with self._lock:
            loaded, self._loaded = self._loaded, {}
        for item in loaded.values():
            await anyio.to_thread.run_sync(item.handle.close)
