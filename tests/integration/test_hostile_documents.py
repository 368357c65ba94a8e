"""Hostile documents, uploaded through the gateway and processed by the real worker code in a
process of its own (so that its peak memory can be measured): a DOCX zip bomb, an XML entity
bomb, an encrypted PDF, a PDF carrying JavaScript, a 10,000-page PDF, text that is not UTF-8.

Each must end as a clear refusal at upload (a problem+json) or a task that is COMPLETED or
FAILED with a reason; never a crash, a hang, or chunks of a failed document in the index. PDFs
with JavaScript, over the page cap (2,000 by default) or encrypted are refused at upload, with
nothing stored (REFUSED_AT_UPLOAD). The worker's peak RSS is bounded; the figures are printed
(``-s``) for the report.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pypdf import PdfWriter

from kubemate.auth import Role
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_isolation_stack import Stack, running_stack

pytestmark = pytest.mark.integration

# Generous: a worker process with its imports is ~0.3 GB here; a bomb that got through would be
# several times the size of what it unpacks to.
MAX_WORKER_RSS_MB = 1500

WORKER = """
import json, resource, sys, time
from kubemate_worker.context import WorkerContext
from kubemate_worker.processing import process_entry
from kubemate_worker.settings import WorkerSettings
values = json.loads(sys.argv[1])
worker = {"consumer_name": "hostile", "metrics_port": 0}
ctx = WorkerContext(WorkerSettings(**values, worker=worker))
runs = []
try:
    ctx.queue.ensure_group()
    while entries := ctx.queue.read_new("hostile", 10, 100):
        for entry in entries:
            started = time.monotonic()
            ctx.inflight.add(entry.entry_id, entry.message)
            outcome = str(process_entry(ctx, entry.entry_id))
            runs.append({
                "document_id": entry.message.document_id,
                "outcome": outcome,
                "seconds": round(time.monotonic() - started, 2),
                # the peak so far: it only grows, so a jump belongs to this document
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            })
finally:
    ctx.close()
print(json.dumps(runs))
"""


@pytest.fixture(scope="module")
def docs_stack(
    tmp_path_factory: pytest.TempPathFactory,
    milvus_lite_uri: str,
    ollama_standin_server: OllamaStandIn,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("hostile-docs")
    with running_stack(tmp, milvus_lite_uri, ollama_standin_server.base_url) as stack:
        yield stack


def run_worker(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every queued entry, processed in one worker process; each run by document id."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(stack.values, default=str)],
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    runs = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return {run["document_id"]: run for run in runs}


# ---- document builders ------------------------------------------------------------------------


CONTENT_TYPES = (
    '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-'
    'package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.wordprocessingml.document.main+xml"/></Types>'
)
PACKAGE_RELS = (
    '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
    'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>'
    "</Relationships>"
)
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def docx(document_xml: bytes | Iterator[bytes]) -> bytes:
    """A minimal but complete Word package around ``document_xml``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", PACKAGE_RELS)
        with archive.open("word/document.xml", "w") as part:
            chunks = [document_xml] if isinstance(document_xml, bytes) else document_xml
            for chunk in chunks:
                part.write(chunk)
    return buffer.getvalue()


def paragraph_docx(text: str) -> bytes:
    return docx(
        f'<?xml version="1.0"?><w:document {W}><w:body><w:p><w:r><w:t>{text}</w:t></w:r>'
        "</w:p></w:body></w:document>".encode()
    )


def zip_bomb_docx(unpacked_mb: int = 300) -> bytes:
    def body() -> Iterator[bytes]:
        yield f'<?xml version="1.0"?><w:document {W}><w:body><w:p><w:r><w:t>'.encode()
        for _ in range(unpacked_mb):
            yield b" " * (1024 * 1024)
        yield b"</w:t></w:r></w:p></w:body></w:document>"

    return docx(body())


def entity_bomb_docx() -> bytes:
    entities = '<!ENTITY a0 "boom">' + "".join(
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10)
    )
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE w:document [{entities}]><w:document {W}>'
        "<w:body><w:p><w:r><w:t>&a9;</w:t></w:r></w:p></w:body></w:document>"
    )
    return docx(xml.encode())


def pdf(page_count: int, text: str, javascript: str | None = None) -> bytes:
    """A PDF written by hand: ``page_count`` pages sharing one content stream (so 10,000 pages
    stay small on disk), Helvetica text, optionally a JavaScript OpenAction."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    first_page = 6
    kids = " ".join(f"{first_page + i} 0 R" for i in range(page_count))
    open_action = " /OpenAction 5 0 R" if javascript else ""
    objects = [
        f"<< /Type /Catalog /Pages 2 0 R{open_action} >>".encode(),
        f"<< /Type /Pages /Kids [{kids}] /Count {page_count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        f"<< /S /JavaScript /JS ({javascript or ''}) >>".encode(),
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"
    )
    objects += [page] * page_count
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def encrypted_pdf(user_password: str) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


HOSTILE: dict[str, tuple[str, bytes]] = {
    "a benign docx (checks the builder)": ("fine.docx", paragraph_docx("Loan book of the bank")),
    "docx zip bomb (300 MB of spaces)": ("bomb.docx", zip_bomb_docx()),
    "docx XML entity bomb (10^9 expansions)": ("laughs.docx", entity_bomb_docx()),
    "encrypted pdf (password)": ("locked.pdf", encrypted_pdf("secret")),
    "encrypted pdf (empty password)": ("empty-password.pdf", encrypted_pdf("")),
    "pdf with JavaScript": (
        "script.pdf",
        pdf(1, "Quarterly report of the bank", javascript="app.alert('pwned')"),
    ),
    "pdf with 10,000 pages": ("huge.pdf", pdf(10_000, "Page of a very long filing")),
    "text that is not UTF-8": ("latin1.txt", "Résumé of the café's accounts".encode("latin-1")),
    "truncated pdf": ("broken.pdf", pdf(3, "cut short")[:400]),
}

# Refused by the upload's PDF check (kubemate_ingest.pdf_inspect) before anything is written.
REFUSED_AT_UPLOAD: dict[str, str] = {
    "encrypted pdf (password)": "pdf-encrypted",
    "encrypted pdf (empty password)": "pdf-encrypted",
    "pdf with JavaScript": "pdf-active-content",
    "pdf with 10,000 pages": "pdf-too-many-pages",
}


def assert_stored_nothing(stack: Stack, tenant: str) -> None:
    """No row, no task, no object, no stream entry for the tenant."""
    assert stack.client.get("/v1/documents", headers=stack.auth(tenant)).json() == []
    assert stack.client.get("/v1/tasks", headers=stack.auth(tenant)).json() == []
    objects = stack.tmp / "objects" / "tenants" / tenant
    assert not objects.exists() or not [p for p in objects.rglob("*") if p.is_file()]
    entries = redis.Redis.from_url(MACHINE_REDIS).xrange(stack.values["redis"]["ingest_stream"])
    assert not any(tenant.encode() in repr(fields).encode() for _, fields in entries)


@pytest.mark.timeout(900)
def test_hostile_documents_end_cleanly(docs_stack: Stack) -> None:
    stack = docs_stack
    report: dict[str, str] = {}
    accepted: dict[str, tuple[str, dict[str, str]]] = {}  # name -> tenant, upload answer
    # A benign document first: its run gives the worker's baseline memory.
    for name, (filename, data) in {
        "baseline": ("ok.txt", b"A benign document about interest rates."),
        **HOSTILE,
    }.items():
        tenant = stack.new_tenant("hostile")
        r = stack.client.post(
            "/v1/documents",
            files={"file": (filename, data)},
            headers=stack.auth(tenant, Role.EDITOR),
        )
        if name in REFUSED_AT_UPLOAD:
            assert r.status_code == 422, (name, r.status_code, r.text)
            assert r.json()["type"].endswith("/" + REFUSED_AT_UPLOAD[name]), (name, r.json())
        if r.status_code == 202:
            accepted[name] = (tenant, r.json())
            continue
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert_stored_nothing(stack, tenant)
        report[name] = f"refused at upload: {r.status_code} {r.json()['type'].rsplit('/', 1)[1]}"

    runs = run_worker(stack)
    for name, (tenant, upload) in accepted.items():
        run = runs[upload["document_id"]]
        assert run["max_rss_mb"] < MAX_WORKER_RSS_MB, (name, run)
        task = stack.client.get(f"/v1/tasks/{upload['task_id']}", headers=stack.auth(tenant))
        state = task.json()
        assert state["state"] in ("COMPLETED", "FAILED"), (name, state)
        hits = stack.client.post(
            "/v1/query",
            json={"question": "bank report page", "document_ids": [upload["document_id"]]},
            headers=stack.auth(tenant),
        ).json()["hits"]
        if name in ("baseline", "a benign docx (checks the builder)"):
            assert state["state"] == "COMPLETED" and hits, (name, state)
        if state["state"] == "FAILED":
            assert state["error"], (name, state)
            assert hits == [], f"{name}: a failed document left chunks in the index"
        report[name] = (
            f"{state['state']} ({(state['error'] or '')[:90]}); worker {run['seconds']} s, "
            f"peak RSS so far {run['max_rss_mb']} MB"
        )
    print("\n" + "\n".join(f"{k}: {v}" for k, v in report.items()))
