"""Rows the metadata tests start from."""

from __future__ import annotations

from kubemate.metadata import DocumentView, MetadataStore, TaskView


def sha(n: int) -> str:
    return f"{n:064x}"


def new_document(
    store: MetadataStore, tenant: str, n: int = 1, collection: str = "default"
) -> tuple[DocumentView, TaskView, bool]:
    return store.documents.create(
        tenant,
        collection=collection,
        filename=f"doc-{n}.pdf",
        content_type="application/pdf",
        size_bytes=1000 + n,
        sha256=sha(n),
        object_key=f"tenants/{tenant}/{n}/raw",
    )
