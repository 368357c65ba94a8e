"""Parts of the worker on their own: the streamed splitting, the embedding batcher, and the
global semaphore on this machine's Redis (the only tests here that need a service)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from kubemate.errors import DocumentProcessingError
from kubemate.inference.hash_embedder import HashEmbedder
from kubemate.settings import EmbedderConfig, SplitterConfig
from kubemate.text.parse import Section
from kubemate.text.split import build_splitter
from kubemate_worker.chunking import text_sections, windows
from kubemate_worker.embedding import EmbedService
from kubemate_worker.slots import RedisSemaphore
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_faults_harness import paragraphs

# ---- streamed splitting --------------------------------------------------------------------


def test_a_document_within_one_window_is_split_exactly_as_a_whole() -> None:
    splitter = build_splitter(None, defaults=SplitterConfig(chunk_size=48, chunk_overlap=8))
    text = paragraphs(60).decode()
    whole = [c.text for c in splitter.split([Section(text)])]
    sections = text_sections(io.BytesIO(text.encode()), block_bytes=1000)
    streamed = [c.text for c in splitter.split(windows(sections, len(text) + 1))]
    assert streamed == whole


def test_windows_cut_at_paragraphs_and_keep_every_character() -> None:
    text = paragraphs(400).decode()
    pieces = list(windows(text_sections(io.BytesIO(text.encode()), block_bytes=777), 5000))
    assert "".join(p.text for p in pieces) == text
    assert all(len(p.text) <= 5000 for p in pieces)
    assert all(p.text.endswith("\n\n") for p in pieces[:-1])


def test_windows_of_a_huge_stream_hold_about_one_window_and_one_block() -> None:
    """50 MB of text, produced lazily: the pieces come out while the text goes in, never
    more than a window plus a block behind."""
    block = ("lorem ipsum dolor sit amet " * 40 + "\n\n") * 20
    produced = 0

    def source() -> Iterator[Section]:
        nonlocal produced
        while produced < 50 * 1024 * 1024:
            produced += len(block)
            yield Section(block)

    handed_out = 0
    for piece in windows(source(), 65_536):
        handed_out += len(piece.text)
        assert produced - handed_out <= 65_536 + len(block)
    assert handed_out == produced


def test_pages_are_never_joined_across_a_break() -> None:
    pages = [Section("one " * 10, page=1), Section("two " * 10, page=2)]
    assert [(p.page, p.text) for p in windows(pages, 4096)] == [(1, "one " * 10), (2, "two " * 10)]


def test_a_character_split_between_blocks_is_kept_whole_and_bad_utf8_is_refused() -> None:
    text = "Straße 北京 " * 100
    decoded = "".join(s.text for s in text_sections(io.BytesIO(text.encode()), block_bytes=7))
    assert decoded == text
    with pytest.raises(DocumentProcessingError, match="not valid UTF-8 at byte"):
        list(text_sections(io.BytesIO(b"fine text \xff\xfe more"), block_bytes=4))


# ---- batching ----------------------------------------------------------------------------------


class RecordingEmbedder(HashEmbedder):
    """The hash embedder (a test stand-in without semantic quality) that records each call's
    batch size and takes a moment per call, as a model does."""

    def __init__(self) -> None:
        super().__init__(EmbedderConfig(provider="hash", dimension=16))
        self.calls: list[int] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        await asyncio.sleep(0.05)
        return await super().embed(texts)


def test_chunks_of_concurrent_documents_are_embedded_together() -> None:
    async def scenario() -> tuple[RecordingEmbedder, list[list[list[float]]]]:
        embedder = RecordingEmbedder()
        service = EmbedService(embedder, batch_size=8, concurrency=1)
        try:
            results = await asyncio.gather(*(service.embed([f"doc {i}"]) for i in range(20)))
        finally:
            await service.aclose()
        return embedder, results

    embedder, results = asyncio.run(scenario())
    assert sum(embedder.calls) == 20
    assert max(embedder.calls) == 8 and len(embedder.calls) <= 4  # not 20 calls of one
    plain = HashEmbedder(EmbedderConfig(provider="hash", dimension=16))
    assert results[3] == [asyncio.run(plain.embed_query("doc 3"))]


def test_one_refused_text_does_not_fail_the_others_batched_with_it() -> None:
    from kubemate.errors import InferenceError

    class Picky(RecordingEmbedder):
        async def embed(self, texts: Sequence[str]) -> list[list[float]]:
            if "poison" in texts:
                raise InferenceError("the runtime refused a text")
            return await super().embed(texts)

    async def scenario() -> list[object]:
        service = EmbedService(Picky(), batch_size=8, concurrency=1)
        try:
            return await asyncio.gather(
                *(service.embed([t]) for t in ("a", "poison", "b")), return_exceptions=True
            )
        finally:
            await service.aclose()

    a, poison, b = asyncio.run(scenario())
    assert isinstance(poison, InferenceError)
    assert isinstance(a, list) and isinstance(b, list)


# ---- the global semaphore ------------------------------------------------------------------


@pytest.fixture
def slots_key() -> Iterator[str]:
    key = f"test:slots:{uuid.uuid4().hex[:8]}"
    yield key
    client = redis.Redis.from_url(MACHINE_REDIS)
    client.delete(key)
    client.close()


@pytest.mark.integration
def test_at_most_limit_holders_across_clients(slots_key: str) -> None:
    """Three clients (as three workers would be), four threads each, a limit of 2."""
    clients = [redis.Redis.from_url(MACHINE_REDIS, decode_responses=True) for _ in range(3)]
    sems = [RedisSemaphore(c, slots_key, limit=2, ttl_s=5) for c in clients]
    inside = 0
    most = 0
    lock = threading.Lock()

    def work(sem: RedisSemaphore) -> None:
        nonlocal inside, most
        with sem.hold():
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work, args=(s,)) for s in sems for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 2
    assert sems[0].in_use() == 0
    for sem, client in zip(sems, clients, strict=True):
        sem.close()
        client.close()


@pytest.mark.integration
def test_a_dead_holder_s_slot_expires(slots_key: str) -> None:
    client = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    dead = RedisSemaphore(client, slots_key, limit=1, ttl_s=0.5)
    dead.acquire()
    dead.close()  # stops refreshing, as a killed worker would, without releasing
    alive = RedisSemaphore(client, slots_key, limit=1, ttl_s=0.5)
    token = alive.acquire()  # waits until the dead one's slot has expired
    alive.release(token)
    alive.close()
    client.close()


@pytest.mark.integration
def test_a_live_holder_keeps_its_slot_past_the_ttl(slots_key: str) -> None:
    client = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    holder = RedisSemaphore(client, slots_key, limit=1, ttl_s=1.0)
    other = RedisSemaphore(client, slots_key, limit=1, ttl_s=1.0)
    with holder.hold():
        time.sleep(2.5)  # past two TTLs: the refresher keeps the slot alive
        got = threading.Event()

        def try_other() -> None:
            token = other.acquire()
            got.set()
            other.release(token)

        waiter = threading.Thread(target=try_other, daemon=True)
        waiter.start()
        assert not got.wait(0.5)
    waiter.join(timeout=5)
    assert got.is_set()
    holder.close()
    other.close()
    client.close()


# ---- several workers in the embedded stack -------------------------------------------------


def test_the_embedded_stack_runs_n_workers_with_ports_of_their_own(tmp_path: Path) -> None:
    from kubemate_cli.embedded.supervisor import EmbeddedStack, StackConfig

    one = EmbeddedStack(StackConfig(data_dir=tmp_path))._worker_specs({}, set(), {})
    assert [s.name for s in one] == ["worker"]

    stack = EmbeddedStack(StackConfig(data_dir=tmp_path, workers=3))
    recorded: dict[str, int] = {}
    specs = stack._worker_specs({"KUBEMATE_REDIS__URL": "redis://x"}, {8000}, recorded)
    assert [s.name for s in specs] == ["worker-1", "worker-2", "worker-3"]
    ports = [s.env["KUBEMATE_WORKER__METRICS_PORT"] for s in specs if s.env]
    assert len(set(ports)) == 3 and "8000" not in ports
    # stack.json records each worker's metrics port, for Prometheus to find them.
    assert {name: str(port) for name, port in recorded.items()} == dict(
        zip(["worker-1", "worker-2", "worker-3"], ports, strict=True)
    )
    assert all(s.env and s.env["KUBEMATE_REDIS__URL"] == "redis://x" for s in specs)

    quiet = stack._worker_specs({"KUBEMATE_WORKER__METRICS_PORT": "0"}, set(), {})
    assert {s.env["KUBEMATE_WORKER__METRICS_PORT"] for s in quiet if s.env} == {"0"}


# ---- upserts written together --------------------------------------------------------------


def test_upserts_of_concurrent_documents_are_written_together() -> None:
    from kubemate.vectorstore import ChunkRecord
    from kubemate_worker.upserts import UpsertBatcher

    calls: list[int] = []
    gate = threading.Event()

    def write(collection: str, records: Sequence[ChunkRecord]) -> None:
        calls.append(len(records))
        gate.wait(5)  # the first call is slow: the others queue up behind it
        if any(r.chunk_id == "bad" for r in records):
            raise RuntimeError("refused")

    batcher = UpsertBatcher(write, max_rows=100, wait_s=0.0)

    def record(chunk_id: str) -> ChunkRecord:
        return ChunkRecord(chunk_id, "t", "d", "text", [0.0], "source")

    errors: dict[str, str] = {}

    def writer(chunk_id: str) -> None:
        try:
            batcher.upsert("c", [record(chunk_id)])
        except RuntimeError as exc:
            errors[chunk_id] = str(exc)

    def queued() -> int:
        return len(batcher._queues.get("c", []))

    first = threading.Thread(target=writer, args=("first",))
    first.start()
    while not calls:
        time.sleep(0.01)
    others = [threading.Thread(target=writer, args=(f"r{i}",)) for i in range(9)]
    others.append(threading.Thread(target=writer, args=("bad",)))
    for thread in others:
        thread.start()
    while queued() < 10:
        time.sleep(0.01)
    gate.set()
    for thread in [first, *others]:
        thread.join(timeout=10)
    assert calls[0] == 1 and sum(calls) == 11 and len(calls) == 2  # the rest in one call
    # The refused row's whole batch hears about it; each document's retries resubmit.
    assert set(errors) == {f"r{i}" for i in range(9)} | {"bad"}
    batcher.upsert("c", [record("later")])  # nobody is left leading: a new writer leads
    assert calls[-1] == 1
