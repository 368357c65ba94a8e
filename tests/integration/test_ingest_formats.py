"""Each format from upload to chunks: the ingest app stores and queues it (real Redis, SQLite and
the filesystem store), then the stored object and the stream entry go through the calls the
worker makes (``extract_sections`` on the object, ``build_splitter`` on the entry's field)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.errors import DocumentProcessingError
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import build_object_store
from kubemate.queue import INGEST_JOBS
from kubemate.text.parse import extract_sections
from kubemate.text.split import Chunk, build_splitter
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.services import MACHINE_REDIS, identity_headers
from tests.unit.test_text import MARKDOWN_DOC, make_docx, make_pdf

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(backend_env: dict[str, object]) -> IngestSettings:
    return IngestSettings(**backend_env)


@pytest.fixture
def client(settings: IngestSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("acme", Role.EDITOR))
        yield c


def ingest(client: TestClient, settings: IngestSettings, name: str, data: bytes, **form: str):  # type: ignore[no-untyped-def]
    """Upload, then do what the worker does with the entry; returns (content type, chunks)."""
    r = client.post("/v1/documents", files={"file": (name, data)}, data=form)
    assert r.status_code == 202, r.text
    r = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    *_, (_, fields) = r.xrange(settings.redis.ingest_stream)
    r.close()
    job = INGEST_JOBS.decode(fields)
    store = MetadataStore.from_config(settings.database)
    document = store.documents.get(job.tenant_id, job.document_id)
    store.dispose()
    with build_object_store(settings.object_store).open(document.object_key) as stream:
        sections = list(extract_sections(stream, document.content_type))
    splitter = build_splitter(job.splitter, defaults=settings.splitter)
    chunks: list[Chunk] = list(splitter.split(sections))
    return document.content_type, chunks


def test_docx_with_the_heading_strategy_gives_chunks_titled_by_heading_path(
    client: TestClient, settings: IngestSettings
) -> None:
    content_type, chunks = ingest(
        client, settings, "report.bin", make_docx(), strategy="markdown", chunk_size="64"
    )
    assert content_type.endswith("wordprocessingml.document")
    assert [c.title for c in chunks] == [
        "Annual report > Results",
        "Annual report > Results > Branches",
    ]
    assert "3.2 percent" in chunks[0].text and "Lyon | 12" in chunks[1].text


def test_markdown_by_headings(client: TestClient, settings: IngestSettings) -> None:
    content_type, chunks = ingest(
        client, settings, "guide.md", MARKDOWN_DOC.encode(), strategy="markdown"
    )
    assert content_type == "text/markdown"
    assert [c.title for c in chunks][1:] == [
        "Guide",
        "Guide > Install",
        "Guide > Install > Linux",
        "Guide > Use",
    ]


def test_pdf_chunks_keep_their_pages(client: TestClient, settings: IngestSettings) -> None:
    content_type, chunks = ingest(
        client, settings, "paper", make_pdf(["first page text", "second page text"])
    )
    assert content_type == "application/pdf"
    assert [(c.page, c.text) for c in chunks] == [(1, "first page text"), (2, "second page text")]


def test_html_and_fixed_windows(client: TestClient, settings: IngestSettings) -> None:
    html = "<html><body>" + "".join(f"<p>Paragraph {i} says hello.</p>" for i in range(80))
    content_type, chunks = ingest(
        client, settings, "page.txt", html.encode(), strategy="fixed", chunk_size="50"
    )
    assert content_type == "text/html"
    assert len(chunks) > 5 and all("<p>" not in c.text for c in chunks)


def test_a_zip_bomb_docx_is_accepted_then_refused_before_it_is_inflated(
    client: TestClient, settings: IngestSettings
) -> None:
    bomb = make_docx(extra_entries={"word/media/zeros.bin": b"\0" * (8 * 1024 * 1024)})
    assert len(bomb) < 100_000  # 8 MiB of zeros packed small: what a bomb looks like
    with pytest.raises(DocumentProcessingError, match="zip bomb"):
        ingest(client, settings, "bomb.docx", bomb)
