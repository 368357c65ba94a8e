"""``milvus.db_name``: a tenant's own Milvus database (namespace per tenant), on Milvus Lite 3.2
(server mode) and a real Milvus 2.3.5, both of which have databases.

The same collection name in two databases holds two separate sets of rows; the database is
created on first connect, and a second store (another replica) finds it there.
"""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError
from pymilvus import MilvusClient

from kubemate.settings import MilvusConfig
from kubemate.vectorstore.base import ChunkRecord
from kubemate.vectorstore.milvus import MilvusVectorStore

pytestmark = pytest.mark.integration

DIM = 4


def store(uri: str, db_name: str = "") -> MilvusVectorStore:
    return MilvusVectorStore(MilvusConfig(uri=uri, db_name=db_name, collection_prefix="dbs"))


def chunk(chunk_id: str, tenant: str) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=chunk_id,
        tenant_id=tenant,
        document_id="doc-1",
        chunk_text=f"text of {chunk_id}",
        vector=[1.0, 0.0, 0.0, 0.0],
        source="a.txt",
    )


def test_a_database_of_its_own_keeps_the_rows_apart(vector_store_uri: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    database, collection = f"kubemate_acme_{suffix}", f"dbs_docs_{suffix}"
    shared, own = store(vector_store_uri), store(vector_store_uri, database)
    replica = store(vector_store_uri, database)
    try:
        for s in (shared, own):
            s.ensure_collection(collection, DIM)
        own.upsert(collection, [chunk("c1", "acme"), chunk("c2", "acme")])
        shared.upsert(collection, [chunk("c9", "acme")])
        assert own.count(collection, "acme") == 2
        assert shared.count(collection, "acme") == 1
        hits = own.search(collection, "acme", [1.0, 0.0, 0.0, 0.0], top_k=5)
        assert {h.chunk_id for h in hits} == {"c1", "c2"}
        # another replica with the same setting: the database exists, the rows are there
        replica.ensure_collection(collection, DIM)
        assert replica.count(collection, "acme") == 2

        client = MilvusClient(uri=vector_store_uri)
        try:
            assert database in client.list_databases()
            # the shared store's copy is in the default database (names get the prefix)
            assert f"dbs_{collection}" in client.list_collections()
        finally:
            client.close()
    finally:
        for s in (own, shared):
            s.drop_collection(collection)
        for s in (shared, own, replica):
            s.close()
        client = MilvusClient(uri=vector_store_uri)
        try:
            client.drop_database(database)
        finally:
            client.close()


@pytest.mark.parametrize("name", ["kubemate-acme", "1tenant", "a" * 65, "drop;db"])
def test_database_names_milvus_would_refuse_are_refused_in_the_settings(name: str) -> None:
    with pytest.raises(ValidationError):
        MilvusConfig(db_name=name)
