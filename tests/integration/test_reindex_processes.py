"""Re-indexing through real processes: the ingest service (uvicorn) and a Celery worker
(``python -m kubemate_worker``, whose bootstep runs the re-indexer), with real Redis, SQLite and
Milvus Lite (the fault tests' harness)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from kubemate.auth import Role
from kubemate.collections import vector_collection
from kubemate.settings import EmbedderConfig
from tests.fixtures.services import MACHINE_REDIS, identity_headers
from tests.integration.test_faults_harness import deployment, paragraphs

pytestmark = pytest.mark.integration


def test_worker_process_reindexes_and_switches(tmp_path: Path, milvus_lite_uri: str) -> None:
    stream = f"test:reindex:{uuid.uuid4().hex[:8]}"
    env = {
        "KUBEMATE_REINDEX__STREAM": stream,
        "KUBEMATE_REINDEX__HEARTBEAT_S": "0.5",
        "KUBEMATE_REINDEX__READ_BLOCK_MS": "200",
    }
    new = ""
    try:
        with deployment(tmp_path, MACHINE_REDIS, milvus_lite_uri, settings_env=env) as d:
            d.start_ingest()
            d.start_worker("w1")
            mine = [d.accept("acme", paragraphs(30, seed), f"{seed}.txt") for seed in "ab"]
            theirs = d.accept("globex", paragraphs(30, "c"), "c.txt")
            d.wait_terminal("acme", [a["task_id"] for a in mine])
            d.wait_terminal("globex", [theirs["task_id"]])
            old = d.vector_collection()
            counts = [d.chunk_count("acme", a["document_id"]) for a in mine]
            their_count = d.chunk_count("globex")
            assert all(counts) and their_count

            acme = identity_headers("acme", Role.EDITOR)
            r = httpx.post(
                d.ingest_url + "/v1/reindex",
                json={"embedder": {"provider": "hash", "model": "hash-b"}},
                headers=acme,
                timeout=30,
            )
            assert r.status_code == 202, r.text
            reindex_id = r.json()["reindex_id"]
            new = r.json()["new_vector_collection"]
            assert new == vector_collection(
                "default", EmbedderConfig(provider="hash", model="hash-b")
            )
            final: dict[str, Any] = {}

            def finished() -> bool:
                got = httpx.get(
                    f"{d.ingest_url}/v1/reindex/{reindex_id}", headers=acme, timeout=10
                ).json()
                final.update(got)
                return got["state"] in ("COMPLETED", "FAILED")

            d.wait_for(finished, "the re-index to end")
            assert final["state"] == "COMPLETED", final
            assert final["progress"] == {"done": 2, "total": 2}

            for accepted, count in zip(mine, counts, strict=True):
                assert d.vectors.count(new, "acme", accepted["document_id"]) == count
            # The old collection is emptied after the switch (the re-index is COMPLETED first).
            d.wait_for(lambda: d.vectors.count(old, "acme") == 0, "the old chunks to be deleted")
            assert d.chunk_count("globex") == their_count
            assert d.vectors.count(new, "globex") == 0

            # The worker process now writes the tenant's uploads to the new collection.
            late = d.accept("acme", paragraphs(10, "d"), "d.txt")
            d.wait_terminal("acme", [late["task_id"]])
            assert d.vectors.count(new, "acme", late["document_id"]) > 0
            assert d.vectors.count(old, "acme") == 0
            # Its embedding tokens were metered for acme, once per document.
            embeds = [t for t in d.store.usage.totals("acme") if t.kind == "embed"]
            assert sum(t.requests for t in embeds) >= 3 and all(t.prompt_tokens for t in embeds)
            if new:
                d.vectors.drop_collection(new)
    finally:
        client = redis.Redis.from_url(MACHINE_REDIS)
        keys = list(client.scan_iter(f"{stream}*"))
        if keys:
            client.delete(*keys)
        client.close()
