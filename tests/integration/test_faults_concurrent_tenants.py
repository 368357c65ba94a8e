"""200 documents uploaded at once by 4 tenants through the ingest service, indexed by 2 worker
processes, on PostgreSQL (the production database) and Milvus Lite. Every one completes, with the
chunk count the splitter gives for its text, and no tenant sees another's chunks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kubemate.collections import vector_collection
from kubemate.inference.hash_embedder import HashEmbedder
from kubemate.metadata.models import TaskState
from kubemate.text.parse import Section
from kubemate.text.split import build_splitter
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_faults_harness import deployment, paragraphs

pytestmark = pytest.mark.integration

TENANTS = ("alpha", "bravo", "charlie", "delta")
DOCUMENTS = 200


def test_200_documents_of_4_tenants_complete_with_exact_chunk_counts(
    tmp_path: Path, milvus_lite_uri: str, postgres_database: Callable[[], str]
) -> None:
    rng = random.Random(7)
    texts = {
        (TENANTS[i % 4], i): paragraphs(rng.randint(1, 40), f"{TENANTS[i % 4]}-{i}")
        for i in range(DOCUMENTS)
    }
    with deployment(
        tmp_path, MACHINE_REDIS, milvus_lite_uri, database_url=postgres_database()
    ) as d:
        d.start_ingest()
        d.start_workers("w1", "w2")

        def upload(key: tuple[str, int]) -> tuple[tuple[str, int], dict[str, str]]:
            return key, d.accept(key[0], texts[key], f"doc-{key[1]}.txt")

        with ThreadPoolExecutor(max_workers=8) as pool:
            accepted = dict(pool.map(upload, list(texts)))

        for tenant in TENANTS:
            ids = [a["task_id"] for (t, _), a in accepted.items() if t == tenant]
            final = d.wait_terminal(tenant, ids, timeout_s=300)
            assert {task.state for task in final.values()} == {TaskState.COMPLETED}

        settings = d.settings()
        splitter = build_splitter(None, defaults=settings.splitter)
        collection = vector_collection("default", settings.collection("default").embedder)
        for (tenant, i), a in accepted.items():
            document = d.store.documents.get(tenant, a["document_id"])
            expected = len(list(splitter.split([Section(texts[(tenant, i)].decode())])))
            assert document.chunk_count == expected, (tenant, i)
            assert d.chunk_count(tenant, document.id) == expected, (tenant, i)

        embedder = HashEmbedder(settings.collection("default").embedder)
        for tenant in TENANTS:
            own = {a["document_id"] for (t, _), a in accepted.items() if t == tenant}
            total = sum(d.store.documents.get(tenant, doc).chunk_count for doc in own)
            assert d.chunk_count(tenant) == total
            # Words every tenant's text shares: only the tenant's own chunks may come back.
            query = asyncio.run(embedder.embed_query("net interest margin deposits million"))
            hits = d.vectors.search(collection, tenant, query, top_k=100)
            assert len(hits) == 100
            assert {hit.document_id for hit in hits} <= own
            usage = {u.kind: u for u in d.store.usage.totals(tenant)}
            assert usage["document"].requests == len(own)  # each completed exactly once
        assert d.pending_entries() == [] and d.dead_letters() == []
