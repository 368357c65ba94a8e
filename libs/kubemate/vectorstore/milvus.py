"""VectorStore on Milvus through pymilvus's ``MilvusClient``.

Runs against Milvus 2.3+ servers and against Milvus Lite's gRPC server (``milvus-lite server``),
which speak the same protocol with a few differences this module absorbs:

* Milvus before 2.4 routes an *upsert* to the wrong partition-key partition (milvus-io/milvus
  #30607, #31548): the row is stored but a ``tenant_id == ...`` filter never finds it again. On
  those servers ``upsert`` deletes the primary keys and inserts them instead.
* Milvus counts VARCHAR ``max_length`` in bytes, Milvus Lite in characters; texts are cut to the
  byte limit, which satisfies both.
* Neither Milvus 2.3 nor Milvus Lite 3.2 accepts filter templates (``filter_params``), so filter
  values are quoted and escaped here (:func:`quote`), for the grammar both parsers share.
* Milvus 2.3 names the primary key ``id`` in a hit, Milvus Lite by its field name; the key is
  read from the requested output fields instead.
* Full-text search: on Milvus 2.5+ and Milvus Lite 3.x a new collection gets a ``sparse`` field
  filled by a BM25 function, from an English analysis of ``chunk_text`` kept in ``analysed``
  (:mod:`kubemate.vectorstore.fulltext`) or from ``chunk_text`` itself (Chinese, by jieba).
  Hybrid search runs the dense and the BM25 search and fuses them here
  (:mod:`kubemate.vectorstore.fusion`, tuned per collection); Milvus Lite's BM25 distances are
  negative, Milvus's positive, and are read as positive scores. Milvus 2.3 has no BM25: that is
  detected once per client from the server version, logged, and hybrid and BM25 searches run
  dense (the result's ``mode`` says so).
* Index templates (:mod:`kubemate.vectorstore.index`) pick HNSW, IVF_FLAT or FLAT; searches
  read the index a collection really has from the server, so the search width is ``ef`` or
  ``nprobe`` as it needs, bounded either way.
* Equal scores are ordered here (:func:`~kubemate.vectorstore.base.ranking_key`), not left in
  the engine's order, which is insertion order: two stacks ingesting the same files with
  concurrent workers would rank (and cite) tied chunks differently; copies of one text are
  scored alike first (:func:`ranked`).

Every search, count and delete is scoped by ``tenant_id``, the collection's partition key, so a
tenant's query only touches its own partition. Vendor errors never leave this module: an
unreachable or overloaded server is :class:`BackendUnavailable` (retryable), anything else
:class:`ServiceError`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, NoReturn, cast, get_args
from urllib.parse import urlsplit, urlunsplit

import grpc
from pymilvus import DataType, Function, FunctionType, MilvusClient
from pymilvus.client.types import LoadState
from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException

from kubemate.errors import BackendUnavailable, ServiceError, ValidationFailed
from kubemate.logs import get_logger
from kubemate.settings import Bm25Config, FusionConfig, MilvusConfig
from kubemate.vectorstore.base import (
    MAX_CHUNK_RECORDS,
    SEARCH_MODES,
    ChunkRecord,
    SearchHit,
    SearchMode,
    SearchResult,
    StoredChunk,
    ranking_key,
)
from kubemate.vectorstore.deferred_flush import DeferredFlush
from kubemate.vectorstore.fulltext import (
    ANALYSED_FIELD,
    BM25_FUNCTION,
    SPARSE_FIELD,
    TEXT_FIELD,
    EnglishAnalysis,
    analysis_named,
    analyzer_params,
    bm25_function,
    engine_supports_bm25,
    english_analysis,
)
from kubemate.vectorstore.fusion import fuse
from kubemate.vectorstore.index import (
    IndexKind,
    IndexSpec,
    default_nprobe,
    hnsw_index,
    search_params,
)

log = get_logger(__name__)

DEFAULT_BATCH_SIZE = 256
ID_MAX_BYTES = 64
CHUNK_TEXT_MAX_BYTES = 65535
SOURCE_MAX_BYTES = 1024
TITLE_MAX_BYTES = 1024
# Milvus rejects a larger limit (topk) or a larger vector dimension.
MAX_TOP_K = 16384
MAX_DIMENSION = 32768
# Primary keys per delete expression: keeps each expression well below the gRPC message limit.
DELETE_BATCH_SIZE = 1024
# A readiness probe must answer well within a probe period, whatever the operation timeout.
PING_TIMEOUT_S = 5.0

METRIC = "COSINE"
VECTOR_FIELD = "vector"
SPARSE_INDEX = "SPARSE_INVERTED_INDEX"
# Candidates each search of a hybrid search contributes at least: a chunk ranked 30th by BM25
# and 5th by dense search must be in both lists to be fused.
HYBRID_MIN_CANDIDATES = 50
# Chunks a search asks for beyond its limit at most, to see all those tied at the cut: a text
# copied into thousands of documents must not make every search read them all.
TIE_MARGIN = 64
_OUTPUT_FIELDS = ["chunk_id", "document_id", "chunk_text", "source", "title", "position", "page"]
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_COLLECTION_NAME = 255
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})

# Status codes that mean "not now" rather than "never": 2 is a refused connection (pymilvus) or
# ServiceUnavailable (Milvus), 8 a rate limit.
_RETRYABLE_CODES = frozenset({2, 8})
_RETRYABLE_GRPC = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_COLLECTION_NOT_FOUND = 100


# ---- helpers (pure, unit-tested) ----------------------------------------------------------------


def quote(value: str) -> str:
    """A double-quoted string literal for a Milvus filter expression.

    Escapes only what the Milvus 2.3 grammar and Milvus Lite's tokenizer both understand: a
    backslash, a double quote and the line breaks neither allows raw inside a literal."""
    return '"' + value.translate(_ESCAPES) + '"'


def _membership(field: str, values: Sequence[str]) -> str:
    if len(values) == 1:
        return f"{field} == {quote(values[0])}"
    return f"{field} in [{', '.join(quote(v) for v in values)}]"


def build_filter(
    tenant_id: str,
    *,
    document_ids: Sequence[str] | None = None,
    chunk_ids: Sequence[str] | None = None,
) -> str:
    """The filter expression for one tenant's chunks, optionally narrowed to some documents or
    chunks. An empty ``document_ids`` or ``chunk_ids`` is refused: it would match nothing, and a
    caller that meant "no restriction" must pass ``None``."""
    if not tenant_id:
        raise ValueError("tenant_id must not be empty")
    clauses = [f"tenant_id == {quote(tenant_id)}"]
    for field, values in (("document_id", document_ids), ("chunk_id", chunk_ids)):
        if values is None:
            continue
        if isinstance(values, str):
            raise TypeError(f"{field}s must be a sequence of strings, not a string")
        if not values:
            raise ValueError(f"{field}s must not be empty; pass None for no restriction")
        clauses.append(_membership(field, values))
    return " and ".join(clauses)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 without splitting a character.

    Lone surrogates (left by broken PDF text extraction) cannot be encoded at all and would fail
    the whole batch, so they become ``?``."""
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    data = text.encode("utf-8", errors="replace")
    return data[:max_bytes].decode("utf-8", errors="ignore")


def is_milvus_lite(server_version: str) -> bool:
    return server_version.strip().startswith("milvus_lite")


def needs_upsert_fallback(server_version: str) -> bool:
    """Whether this server mis-routes upserts on a partition-key collection (Milvus < 2.4).

    Milvus Lite reports ``milvus_lite-X.Y.Z`` and has no such bug; the embedded Milvus 2.3.5
    reports ``v2.3.5-lite``, so the two are told apart by prefix, not by "lite"."""
    version = server_version.strip()
    if is_milvus_lite(version):
        return False
    match = _VERSION.match(version)
    if match is None:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    return (major, minor) < (2, 4)


def _redacted(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _check_id(field: str, value: str) -> None:
    if not value:
        raise ValidationFailed(f"{field} must not be empty")
    if len(value.encode("utf-8", errors="replace")) > ID_MAX_BYTES:
        # Cutting an id would silently merge distinct chunks or documents.
        raise ValidationFailed(f"{field} is longer than {ID_MAX_BYTES} bytes", field=field)


def _is_retryable(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MilvusUnavailableException | ConnectError):
            return True
        if isinstance(current, grpc.RpcError):
            code = getattr(current, "code", None)
            if callable(code) and code() in _RETRYABLE_GRPC:
                return True
        # pymilvus puts a grpc.StatusCode in .code when its own retries ran out.
        if isinstance(current, MilvusException) and (
            current.code in _RETRYABLE_GRPC or current.code in _RETRYABLE_CODES
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


# ---- the adapter --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Layout:
    """What a collection really is on the server, as far as searching it needs to know."""

    dimension: int
    index: IndexSpec | None  # None: an index type this adapter does not tune (search defaults)
    bm25: bool
    analysis: EnglishAnalysis | None = None  # what fills the BM25 field (None: the raw text)


_INDEX_KINDS: frozenset[str] = frozenset(get_args(IndexKind))


def _int_param(info: Mapping[str, Any], name: str) -> int | None:
    # Milvus 2.3 flattens index params into describe_index's answer (as strings); others nest.
    nested = info.get("params")
    value = info.get(name, nested.get(name) if isinstance(nested, Mapping) else None)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _index_on_server(info: Mapping[str, Any], requested: IndexSpec) -> IndexSpec | None:
    """The spec of the vector index described by ``info``; the requested spec's defaults fill in
    what the server does not report (Milvus Lite reports no build parameters)."""
    kind = str(info.get("index_type", "")).upper()
    if kind not in _INDEX_KINDS:
        return None
    if kind != requested.kind:
        requested = IndexSpec(kind=cast(IndexKind, kind), template="existing")
    build = dict(requested.build)
    for name in ("M", "efConstruction", "nlist"):
        value = _int_param(info, name)
        if value is not None:
            build[name] = value
    spec = replace(requested, build=build)
    if spec.kind == "IVF_FLAT" and spec.search_width is None and spec.nlist:
        spec = replace(spec, search_width=default_nprobe(spec.nlist))
    return spec


class MilvusVectorStore:
    """Implements :class:`kubemate.vectorstore.VectorStore` on one Milvus endpoint.

    Collection names are the configured ``collection_prefix`` + ``_`` + the logical name. The
    client connects lazily, so building the store never needs the server to be up."""

    def __init__(self, config: MilvusConfig, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._config = config
        self._default_index = hnsw_index(config.index)
        self._timeout = config.timeout_s
        self._consistency = config.consistency_level
        self._batch_size = batch_size
        self._client: MilvusClient | None = None
        self._native_upsert = True
        self._bm25_engine = False
        self._flush_writes = False
        # Re-entrant: ensure_collection holds it while describing through _connection.
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._deferred_flush = DeferredFlush(
            self._flush_lite,
            interval_s=config.lite_flush_interval_s,
            max_rows=config.lite_flush_max_rows,
        )
        # physical collection name -> its layout, for collections known to exist (and, for
        # those in _ready, to be indexed and loaded by this instance).
        self._layouts: dict[str, _Layout] = {}
        self._ready: set[str] = set()
        self._fallback_logged: set[str] = set()

    # ---- plumbing -------------------------------------------------------------------------------

    def _raise(self, exc: Exception, op: str, collection: str | None) -> NoReturn:
        code = getattr(exc, "code", None)
        message = getattr(exc, "message", None) or str(exc)
        if _is_retryable(exc):
            log.warning("milvus.unavailable", op=op, collection=collection, code=str(code))
            raise BackendUnavailable("vector store is unavailable", op=op) from exc
        if code == _COLLECTION_NOT_FOUND and collection is not None:
            self._forget(collection)  # dropped behind our back: ensure_collection recreates it
            log.warning("milvus.collection_missing", op=op, collection=collection)
            raise ServiceError(
                f"vector collection {collection!r} does not exist", op=op, collection=collection
            ) from exc
        log.warning("milvus.error", op=op, collection=collection, code=str(code), error=message)
        raise ServiceError(f"vector store {op} failed", op=op, collection=collection) from exc

    @contextmanager
    def _mapped(self, op: str, collection: str | None = None) -> Iterator[None]:
        try:
            yield
        except (MilvusException, grpc.RpcError) as exc:
            self._raise(exc, op, collection)

    def _create_database(self, client: MilvusClient, db_name: str) -> None:
        """Create ``db_name`` unless it exists. Creating races with other replicas doing the
        same; the loser finds it there."""
        if db_name in client.list_databases(timeout=self._timeout):
            return
        try:
            client.create_database(db_name, timeout=self._timeout)
            log.info("milvus.database_created", db_name=db_name)
        except MilvusException:
            if db_name not in client.list_databases(timeout=self._timeout):
                raise

    def _connection(self) -> MilvusClient:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is not None:
                return self._client
            token = self._config.token.get_secret_value() if self._config.token else ""
            with self._mapped("connect"):
                client = MilvusClient(uri=self._config.uri, token=token, timeout=self._timeout)
                try:
                    version = str(client.get_server_version(timeout=self._timeout))
                    if self._config.db_name:
                        self._create_database(client, self._config.db_name)
                        # A client of that database from the start: switching a client's
                        # database (use_database) needs DescribeDatabase, which Milvus 2.3 lacks.
                        client.close()
                        client = MilvusClient(
                            uri=self._config.uri,
                            token=token,
                            db_name=self._config.db_name,
                            timeout=self._timeout,
                        )
                except BaseException:
                    client.close()
                    raise
            self._native_upsert = not needs_upsert_fallback(version)
            self._bm25_engine = engine_supports_bm25(version)
            self._flush_writes = self._bm25_engine and is_milvus_lite(version)
            if not _VERSION.search(version):
                log.warning("milvus.unknown_server_version", server_version=version)
            log.info(
                "milvus.connected",
                uri=_redacted(self._config.uri),
                server_version=version,
                native_upsert=self._native_upsert,
                bm25=self._bm25_engine,
            )
            if not self._bm25_engine:
                # Once per client: every hybrid or BM25 search will quietly run dense.
                log.warning(
                    "milvus.bm25_unsupported",
                    server_version=version,
                    fallback="dense",
                    hint="full-text (BM25) search needs Milvus 2.5+ or Milvus Lite 3.x",
                )
            self._client = client
            return client

    def close(self) -> None:
        if self._client is not None:
            self._deferred_flush.flush_pending()  # searches stay fast after this writer is gone
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._layouts.clear()
            self._ready.clear()
            self._fallback_logged.clear()

    def physical_name(self, name: str) -> str:
        """The Milvus collection behind the logical collection ``name``."""
        prefix = self._config.collection_prefix
        physical = f"{prefix}_{name}" if prefix else name
        if (
            not name
            or not _COLLECTION_NAME.fullmatch(physical)
            or len(physical) > _MAX_COLLECTION_NAME
        ):
            raise ValidationFailed(
                f"invalid collection name {name!r}: letters, digits and underscores only"
            )
        return physical

    def _forget(self, physical: str) -> None:
        self._layouts.pop(physical, None)
        self._ready.discard(physical)
        self._fallback_logged.discard(physical)

    def _describe(self, physical: str, requested: IndexSpec) -> _Layout:
        """Read the collection's dimension, full-text capability and vector index."""
        client = self._connection()
        with self._mapped("describe_collection", physical):
            description = client.describe_collection(physical, timeout=self._timeout)
            names = client.list_indexes(physical, field_name=VECTOR_FIELD, timeout=self._timeout)
            info = client.describe_index(physical, names[0], timeout=self._timeout) if names else {}
        dimension = 0
        for field in description.get("fields", []):
            if field.get("name") == VECTOR_FIELD:
                dimension = int(field.get("params", {}).get("dim", 0))
                break
        if not dimension:
            raise ServiceError(
                f"vector collection {physical!r} has no {VECTOR_FIELD!r} field", collection=physical
            )
        index = _index_on_server(info, requested) if info else None
        function = bm25_function(description)
        return _Layout(
            dimension=dimension,
            index=index,
            bm25=function is not None,
            analysis=analysis_named(function) if function else None,
        )

    def _layout(self, physical: str) -> _Layout:
        layout = self._layouts.get(physical)
        if layout is None:
            layout = self._describe(physical, self._default_index)
            self._layouts[physical] = layout
        return layout

    def _check_vector(self, physical: str, vector: Sequence[float]) -> list[float]:
        expected = self._layout(physical).dimension
        if len(vector) != expected:
            # Our embedder and the collection disagree: a configuration error, not the caller's.
            raise ServiceError(
                f"vector has dimension {len(vector)}, collection {physical!r} holds {expected}",
                collection=physical,
            )
        return [float(x) for x in vector]

    def _schema(
        self,
        dimension: int,
        analyzer: dict[str, Any] | None,
        analysis: EnglishAnalysis | None = None,
    ) -> Any:
        """``analyzer`` None: no BM25. With an ``analysis``, the BM25 function reads the
        ``analysed`` copy (the engine's analyzer only splits it on spaces again)."""
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=ID_MAX_BYTES, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
        if analyzer is None or analysis is not None:
            schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=CHUNK_TEXT_MAX_BYTES)
        if analyzer is not None:
            source = TEXT_FIELD if analysis is None else ANALYSED_FIELD
            schema.add_field(
                source,
                DataType.VARCHAR,
                max_length=CHUNK_TEXT_MAX_BYTES,
                enable_analyzer=True,
                analyzer_params=analyzer,
            )
            schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name=BM25_FUNCTION if analysis is None else analysis.function_name,
                    function_type=FunctionType.BM25,
                    input_field_names=[source],
                    output_field_names=[SPARSE_FIELD],
                )
            )
        schema.add_field("document_id", DataType.VARCHAR, max_length=ID_MAX_BYTES)
        schema.add_field(
            "tenant_id", DataType.VARCHAR, max_length=ID_MAX_BYTES, is_partition_key=True
        )
        schema.add_field("source", DataType.VARCHAR, max_length=SOURCE_MAX_BYTES)
        schema.add_field("title", DataType.VARCHAR, max_length=TITLE_MAX_BYTES)
        schema.add_field("position", DataType.INT64)
        schema.add_field("page", DataType.INT64)
        return schema

    @staticmethod
    def _index_params(vector: IndexSpec | None, sparse: bool) -> Any:
        params = MilvusClient.prepare_index_params()
        if vector is not None:
            params.add_index(
                field_name=VECTOR_FIELD,
                index_type=vector.kind,
                metric_type=METRIC,
                params=dict(vector.build),
            )
        if sparse:
            params.add_index(field_name=SPARSE_FIELD, index_type=SPARSE_INDEX, metric_type="BM25")
        return params

    def _row(self, record: ChunkRecord, physical: str) -> dict[str, Any]:
        _check_id("chunk_id", record.chunk_id)
        _check_id("tenant_id", record.tenant_id)
        _check_id("document_id", record.document_id)
        row: dict[str, Any] = {
            "chunk_id": record.chunk_id,
            VECTOR_FIELD: self._check_vector(physical, record.vector),
            "document_id": record.document_id,
            "tenant_id": record.tenant_id,
            "position": int(record.position),
            "page": int(record.page),
        }
        for field, value, limit in (
            (TEXT_FIELD, record.chunk_text, CHUNK_TEXT_MAX_BYTES),
            ("source", record.source, SOURCE_MAX_BYTES),
            ("title", record.title, TITLE_MAX_BYTES),
        ):
            cut = truncate_utf8(value, limit)
            if len(cut) < len(value):
                log.info("milvus.field_truncated", field=field, chunk_id=record.chunk_id)
            row[field] = cut
        analysis = self._layout(physical).analysis
        if analysis is not None:
            row[ANALYSED_FIELD] = truncate_utf8(
                analysis.analyse(row[TEXT_FIELD]), CHUNK_TEXT_MAX_BYTES
            )
        return row

    # ---- the port -------------------------------------------------------------------------------

    def ping(self) -> None:
        try:
            client = self._connection()
            with self._mapped("ping"):
                client.get_server_version(timeout=min(self._timeout, PING_TIMEOUT_S))
        except BackendUnavailable:
            raise
        except ServiceError as exc:
            # An engine that answers with an error is not ready either.
            raise BackendUnavailable("vector store did not answer", op="ping") from exc

    def ensure_collection(
        self,
        name: str,
        dimension: int,
        *,
        language: str = "en",
        index: IndexSpec | None = None,
        bm25: Bm25Config | None = None,
    ) -> None:
        physical = self.physical_name(name)
        known = self._layouts.get(physical)
        if physical in self._ready and known is not None and known.dimension == dimension:
            return
        if not 1 <= dimension <= MAX_DIMENSION:
            raise ValueError(f"dimension must be between 1 and {MAX_DIMENSION}")
        analyzer = analyzer_params(language)  # an unknown language fails before any change
        analysis = english_analysis(bm25 or Bm25Config()) if language == "en" else None
        spec = index or self._default_index
        client = self._connection()
        with self._lock, self._mapped("ensure_collection", physical):
            if not client.has_collection(physical, timeout=self._timeout):
                fulltext = self._bm25_engine
                try:
                    client.create_collection(
                        physical,
                        schema=self._schema(dimension, analyzer if fulltext else None, analysis),
                        index_params=self._index_params(spec, sparse=fulltext),
                        consistency_level=self._consistency,
                        timeout=self._timeout,
                    )
                    log.info(
                        "milvus.collection_created",
                        name=physical,
                        dimension=dimension,
                        index=spec.kind,
                        template=spec.template,
                        index_params=spec.build,
                        bm25=fulltext,
                        language=language,
                        analysis=analysis.function_name if analysis and fulltext else None,
                    )
                except MilvusException:
                    # Another process created it between our check and our create.
                    if not client.has_collection(physical, timeout=self._timeout):
                        raise
            self._layouts.pop(physical, None)
            layout = self._describe(physical, spec)
            if layout.dimension != dimension:
                raise ServiceError(
                    f"vector collection {physical!r} holds vectors of dimension "
                    f"{layout.dimension}, not {dimension}: drop it or configure a new collection",
                    collection=physical,
                )
            # A creator that died between create and index leaves an unindexed collection.
            if not client.list_indexes(physical, field_name=VECTOR_FIELD, timeout=self._timeout):
                client.create_index(
                    physical, self._index_params(spec, False), timeout=self._timeout
                )
                layout.index = spec
                log.info("milvus.index_created", name=physical, index=spec.kind)
            elif layout.index is None or layout.index.kind != spec.kind:
                # Changing a template does not rebuild an existing index: say which one serves.
                log.warning(
                    "milvus.index_differs",
                    name=physical,
                    existing=layout.index.kind if layout.index else "unknown",
                    requested=spec.kind,
                )
            if layout.bm25 and not client.list_indexes(
                physical, field_name=SPARSE_FIELD, timeout=self._timeout
            ):
                client.create_index(physical, self._index_params(None, True), timeout=self._timeout)
            state = client.get_load_state(physical, timeout=self._timeout).get("state")
            if state != LoadState.Loaded:
                client.load_collection(physical, timeout=self._timeout)
                log.info("milvus.collection_loaded", name=physical)
            if self._bm25_engine and not layout.bm25:
                log.warning(
                    "milvus.collection_without_bm25",
                    name=physical,
                    fallback="dense",
                    hint="created before full-text search: re-index into a new collection",
                )
            self._layouts[physical] = layout
            self._ready.add(physical)

    def supports_bm25(self, collection: str) -> bool:
        layout = self._layout(self.physical_name(collection))  # connects: learns the engine
        return self._bm25_engine and layout.bm25

    def ready_bm25(self, collection: str, dimension: int) -> bool | None:
        # Plain reads of a set and a dict (atomic under the GIL), no lock: a thread holding it
        # for a slow Milvus call must not stall the caller's event loop.
        physical = self.physical_name(collection)
        known = self._layouts.get(physical)
        if physical not in self._ready or known is None or known.dimension != dimension:
            return None
        return self._bm25_engine and known.bm25

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        physical = self.physical_name(collection)
        client = self._connection()
        # The last record of a chunk id wins, as it would with sequential upserts; duplicates in
        # one request would otherwise be stored twice by the delete+insert fallback.
        latest = {record.chunk_id: record for record in records}
        rows = [self._row(record, physical) for record in latest.values()]
        for start in range(0, len(rows), self._batch_size):
            batch = rows[start : start + self._batch_size]
            with self._mapped("upsert", physical):
                if self._native_upsert:
                    client.upsert(physical, batch, timeout=self._timeout)
                else:
                    # Milvus < 2.4 upserts into the wrong partition-key partition; delete and
                    # insert are routed correctly. Not atomic: a concurrent search may miss
                    # these chunks for the moment between the two calls.
                    ids = _membership("chunk_id", [row["chunk_id"] for row in batch])
                    client.delete(physical, filter=ids, timeout=self._timeout)
                    client.insert(physical, batch, timeout=self._timeout)
        if self._flush_writes and self._layout(physical).bm25:
            self._deferred_flush.wrote(physical, len(rows))
        log.debug("milvus.upserted", collection=physical, rows=len(rows))

    def _flush_lite(self, physical: str) -> None:
        """Milvus Lite rebuilds the BM25 index of its unflushed rows on every search, in Python
        (~0.2-0.7 ms a row: seconds per query at 5k chunks); flushed segments keep theirs.
        Flushes are gathered (:mod:`kubemate.vectorstore.deferred_flush`: one per second at
        most, by default). (Milvus proper must not be flushed like this: tiny segments.)

        The rows are written whether or not this succeeds, so a failed flush is only logged:
        Milvus Lite 3.2 can refuse one that overlaps another client's ("current_seq is
        monotonic"); the next write flushes them. Flushes of this process take turns."""
        with self._flush_lock:
            try:
                self._connection().flush(physical, timeout=self._timeout)
            except Exception as exc:  # often in a timer thread: logged, never raised
                log.warning(
                    "milvus.flush_failed",
                    collection=physical,
                    error=getattr(exc, "message", None) or str(exc),
                )

    def delete_document(self, collection: str, tenant_id: str, document_id: str) -> None:
        _check_id("tenant_id", tenant_id)
        _check_id("document_id", document_id)
        physical = self.physical_name(collection)
        client = self._connection()
        expr = build_filter(tenant_id, document_ids=[document_id])
        with self._mapped("delete_document", physical):
            client.delete(physical, filter=expr, timeout=self._timeout)
        log.info(
            "milvus.document_deleted",
            collection=physical,
            tenant_id=tenant_id,
            document_id=document_id,
        )

    def delete_tenant(self, collection: str, tenant_id: str) -> None:
        _check_id("tenant_id", tenant_id)
        physical = self.physical_name(collection)
        client = self._connection()
        with self._mapped("delete_tenant", physical):
            if not client.has_collection(physical, timeout=self._timeout):
                return
            client.delete(physical, filter=build_filter(tenant_id), timeout=self._timeout)
        log.info("milvus.tenant_deleted", collection=physical, tenant_id=tenant_id)

    def delete_chunks(self, collection: str, tenant_id: str, chunk_ids: Sequence[str]) -> None:
        _check_id("tenant_id", tenant_id)
        if not chunk_ids:
            return
        physical = self.physical_name(collection)
        client = self._connection()
        ids = list(dict.fromkeys(chunk_ids))
        for start in range(0, len(ids), DELETE_BATCH_SIZE):
            expr = build_filter(tenant_id, chunk_ids=ids[start : start + DELETE_BATCH_SIZE])
            with self._mapped("delete_chunks", physical):
                client.delete(physical, filter=expr, timeout=self._timeout)
        log.info("milvus.chunks_deleted", collection=physical, tenant_id=tenant_id, chunks=len(ids))

    def search(
        self,
        collection: str,
        tenant_id: str,
        vector: Sequence[float],
        top_k: int,
        *,
        ef: int | None = None,
        document_ids: Sequence[str] | None = None,
        query_text: str | None = None,
        mode: SearchMode = "dense",
        fusion: FusionConfig | None = None,
    ) -> SearchResult:
        _check_id("tenant_id", tenant_id)
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValidationFailed(f"top_k must be between 1 and {MAX_TOP_K}", field="top_k")
        if mode not in SEARCH_MODES:
            raise ValidationFailed(f"mode must be one of {', '.join(SEARCH_MODES)}", field="mode")
        text = (query_text or "").strip()
        if mode != "dense" and not text:
            raise ValidationFailed(f"a {mode} search needs the query text", field="query_text")
        if document_ids is not None and not document_ids:
            return SearchResult(mode=mode)  # restricted to no documents
        physical = self.physical_name(collection)
        client = self._connection()
        layout = self._layout(physical)
        used = mode if mode == "dense" or (self._bm25_engine and layout.bm25) else "dense"
        if used != mode and physical not in self._fallback_logged:
            self._fallback_logged.add(physical)
            log.warning(
                "milvus.search_fallback",
                collection=physical,
                requested=mode,
                used=used,
                reason="engine has no BM25" if not self._bm25_engine else "collection has no BM25",
            )
        expr = build_filter(tenant_id, document_ids=document_ids)
        common: dict[str, Any] = {
            "output_fields": _OUTPUT_FIELDS,
            "consistency_level": self._consistency,
            "timeout": self._timeout,
        }
        # The query analysed as the collection's text was; all stop words: no BM25 terms.
        terms = layout.analysis.analyse(text) if layout.analysis and used != "dense" else text

        def bm25(limit: int) -> list[SearchHit]:
            if not terms:
                return []
            with self._mapped("search", physical):
                results = client.search(
                    physical,
                    data=[terms],
                    filter=expr,
                    limit=limit,
                    anns_field=SPARSE_FIELD,
                    search_params={"metric_type": "BM25"},
                    **common,
                )
            return _hits(results, bm25=True)

        def dense(limit: int) -> list[SearchHit]:
            with self._mapped("search", physical):
                results = client.search(
                    physical,
                    data=[self._check_vector(physical, vector)],
                    filter=expr,
                    limit=limit,
                    anns_field=VECTOR_FIELD,
                    search_params=self._dense_params(layout, limit, ef),
                    **common,
                )
            return _hits(results)

        if used == "bm25":
            hits = ranked(bm25, top_k)
        elif used == "hybrid":
            depth = min(MAX_TOP_K, max(top_k, HYBRID_MIN_CANDIDATES))
            hits = fuse(ranked(dense, depth), ranked(bm25, depth), fusion or FusionConfig(), top_k)
        else:
            hits = ranked(dense, top_k)
        return SearchResult(hits, mode=used)

    @staticmethod
    def _dense_params(layout: _Layout, top_k: int, ef: int | None) -> dict[str, Any]:
        params = search_params(layout.index, top_k, ef) if layout.index is not None else {}
        return {"metric_type": METRIC, "params": params}

    def count(self, collection: str, tenant_id: str, document_id: str | None = None) -> int:
        _check_id("tenant_id", tenant_id)
        physical = self.physical_name(collection)
        document_ids = None if document_id is None else [document_id]
        expr = build_filter(tenant_id, document_ids=document_ids)
        client = self._connection()
        with self._mapped("count", physical):
            rows = client.query(
                physical,
                filter=expr,
                output_fields=["count(*)"],
                consistency_level=self._consistency,
                timeout=self._timeout,
            )
        return int(rows[0]["count(*)"]) if rows else 0

    def document_chunks(
        self, collection: str, tenant_id: str, document_id: str, *, first: int, limit: int
    ) -> list[StoredChunk]:
        _check_id("tenant_id", tenant_id)
        _check_id("document_id", document_id)
        if first < 0 or not 1 <= limit <= MAX_TOP_K:
            raise ValidationFailed(f"a page of chunks is 1 to {MAX_TOP_K} from position 0 on")
        physical = self.physical_name(collection)
        expr = (
            f"{build_filter(tenant_id, document_ids=[document_id])}"
            f" and position >= {int(first)} and position < {int(first) + int(limit)}"
        )
        client = self._connection()
        with self._mapped("document_chunks", physical):
            rows = client.query(
                physical,
                filter=expr,
                output_fields=["chunk_id", TEXT_FIELD, "position", "page"],
                limit=limit,
                consistency_level=self._consistency,
                timeout=self._timeout,
            )
        chunks = {
            int(row["position"]): StoredChunk(
                chunk_id=str(row["chunk_id"]),
                position=int(row["position"]),
                page=int(row.get("page") or 0),
                chunk_text=str(row.get(TEXT_FIELD) or ""),
            )
            for row in rows
        }
        return [chunks[position] for position in sorted(chunks)]

    def chunk_records(
        self, collection: str, tenant_id: str, document_id: str, chunk_ids: Sequence[str]
    ) -> list[ChunkRecord]:
        _check_id("tenant_id", tenant_id)
        _check_id("document_id", document_id)
        if len(chunk_ids) > MAX_CHUNK_RECORDS:
            raise ValidationFailed(f"at most {MAX_CHUNK_RECORDS} chunk ids a call")
        if not chunk_ids:
            return []
        physical = self.physical_name(collection)
        expr = build_filter(tenant_id, document_ids=[document_id], chunk_ids=list(chunk_ids))
        client = self._connection()
        with self._mapped("chunk_records", physical):
            # A plain query: the primary keys bound the result (an iterator is for whole
            # collections), and its limit keeps within the server's result window.
            rows = client.query(
                physical,
                filter=expr,
                output_fields=[*_OUTPUT_FIELDS, VECTOR_FIELD, "tenant_id"],
                limit=len(chunk_ids),
                consistency_level=self._consistency,
                timeout=self._timeout,
            )
        records = [_to_record(row) for row in rows]
        records.sort(key=lambda r: r.position)
        return records

    # ---- export (kubemate.vectorstore.VectorExport) --------------------------------------------

    def collections(self) -> list[str]:
        prefix = self._config.collection_prefix
        client = self._connection()
        with self._mapped("list_collections"):
            names = client.list_collections(timeout=self._timeout)
        if not prefix:
            return sorted(names)
        return sorted(n[len(prefix) + 1 :] for n in names if n.startswith(prefix + "_"))

    def dimension(self, collection: str) -> int:
        return self._layout(self.physical_name(collection)).dimension

    def export(self, collection: str, *, batch_size: int = 1000) -> Iterator[list[ChunkRecord]]:
        """Through pymilvus's query iterator, which pages by primary key from a snapshot
        timestamp on Milvus 2.3+ and on Milvus Lite alike. (A plain ``query`` with ``limit``
        and a key cursor does not work: Milvus Lite answers it with any rows, unsorted.)"""
        if not 1 <= batch_size <= MAX_TOP_K:
            raise ValueError(f"batch_size must be between 1 and {MAX_TOP_K}")
        physical = self.physical_name(collection)
        self.ensure_collection(collection, self.dimension(collection))  # loaded for queries
        client = self._connection()
        with self._mapped("export", physical):
            iterator = client.query_iterator(
                physical,
                batch_size=batch_size,
                filter="",
                output_fields=[*_OUTPUT_FIELDS, VECTOR_FIELD, "tenant_id"],
                timeout=self._timeout,
            )
        try:
            while True:
                with self._mapped("export", physical):
                    rows = iterator.next()
                if not rows:
                    return
                yield [_to_record(row) for row in rows]
        finally:
            iterator.close()

    def load(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        physical = self.physical_name(collection)
        client = self._connection()
        rows = [self._row(record, physical) for record in records]
        for start in range(0, len(rows), self._batch_size):
            batch = rows[start : start + self._batch_size]
            with self._mapped("load", physical):
                client.insert(physical, batch, timeout=self._timeout)
        if self._flush_writes and self._layout(physical).bm25:
            self._deferred_flush.wrote(physical, len(rows))

    def drop_collection(self, name: str) -> None:
        physical = self.physical_name(name)
        client = self._connection()
        with self._lock, self._mapped("drop_collection", physical):
            self._forget(physical)
            # Dropping a missing collection succeeds on both Milvus and Milvus Lite.
            client.drop_collection(physical, timeout=self._timeout)
        log.info("milvus.collection_dropped", name=physical)


def ranked(search: Callable[[int], list[SearchHit]], limit: int) -> list[SearchHit]:
    """The ``limit`` best hits of ``search(n)`` (the engine's ``n`` best, in any order), copies
    of one text scored alike (:func:`scored_by_text`) and equal scores in :func:`ranking_key`
    order. The engine cuts its ``n`` among chunks that tie at the cut by insertion order, so
    one more is asked for, and more while the engine's last one still ties with the one at the
    limit or copies a text kept (up to ``TIE_MARGIN`` more): the chunks it left out then score
    below every one kept."""
    most = min(MAX_TOP_K, limit + TIE_MARGIN)
    asked = min(most, limit + 1)
    while True:
        found = search(asked)
        hits = sorted(scored_by_text(found), key=ranking_key)
        if len(found) < asked or asked >= most:
            return hits[:limit]
        last = min(found, key=lambda hit: hit.score)
        kept = hits[:limit]
        if last.score != kept[-1].score and all(h.chunk_text != last.chunk_text for h in kept):
            return kept
        asked = min(most, asked * 2)


def scored_by_text(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """``hits`` with copies of one text all at the best score among them. A score is a function
    of the text, but the engine's come out apart for copies: a vector differs in its last bits
    with the texts it was embedded beside (a batch pads them to its longest), and Milvus Lite
    weighs BM25 terms per segment, which holds whichever chunks were flushed together. Scored
    alike, copies are ordered by :func:`ranking_key` on every stack."""
    best: dict[str, float] = {}
    for hit in hits:
        best[hit.chunk_text] = max(best.get(hit.chunk_text, hit.score), hit.score)
    return [
        hit if hit.score == best[hit.chunk_text] else replace(hit, score=best[hit.chunk_text])
        for hit in hits
    ]


def _hits(results: Any, *, bm25: bool = False) -> list[SearchHit]:
    return [_to_hit(hit, bm25=bm25) for hit in results[0]] if results else []


def _to_hit(hit: Any, *, bm25: bool = False) -> SearchHit:
    entity = hit.get("entity") or {}
    # Milvus 2.3 calls the primary key "id" in a hit; Milvus Lite uses the field's name.
    chunk_id = entity.get("chunk_id") or hit.get("chunk_id") or hit.get("id")
    distance = float(hit.get("distance", 0.0))
    # A BM25 score is never negative: Milvus Lite reports it negated (best first, as the most
    # negative), Milvus as it is. Cosine (which can be negative) and RRF scores pass unchanged.
    return SearchHit(
        chunk_id=str(chunk_id),
        document_id=entity.get("document_id", ""),
        chunk_text=entity.get(TEXT_FIELD, ""),
        source=entity.get("source", ""),
        title=entity.get("title", ""),
        position=int(entity.get("position", 0)),
        page=int(entity.get("page", 0)),
        score=abs(distance) if bm25 else distance,
    )


def _to_record(row: Mapping[str, Any]) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=str(row["chunk_id"]),
        tenant_id=str(row["tenant_id"]),
        document_id=str(row["document_id"]),
        chunk_text=str(row.get(TEXT_FIELD, "")),
        vector=[float(x) for x in row[VECTOR_FIELD]],
        source=str(row.get("source", "")),
        title=str(row.get("title", "")),
        position=int(row.get("position", 0)),
        page=int(row.get("page", 0)),
    )
