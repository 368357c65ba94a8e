"""Poison documents: they fail at once into the dead-letter stream, with the reason and the
stage, and never hold up the documents queued behind them (real worker and ingest processes,
one worker running one document at a time, so "behind" means behind)."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from kubemate.metadata.models import TaskState
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_faults_harness import deployment, paragraphs

pytestmark = pytest.mark.integration

DEAD_LETTER_FIELDS = {
    "tenant_id",
    "document_id",
    "task_id",
    "collection",
    "reason",
    "stage",
    "attempts",
    "failed_at",
    "original_entry_id",
}


def zip_bomb_docx() -> bytes:
    """A DOCX whose document part inflates 64 MB of zeros from about 64 KB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"\0" * (64 * 1024 * 1024))
    return buffer.getvalue()


def test_poison_documents_are_dead_lettered_and_do_not_block_the_queue(
    tmp_path: Path, milvus_lite_uri: str
) -> None:
    with deployment(tmp_path, MACHINE_REDIS, milvus_lite_uri) as d:
        d.start_ingest()
        poison = {
            "corrupt.pdf": d.accept("acme", b"%PDF-1.7\n" + bytes(range(256)) * 40, "corrupt.pdf"),
            "bomb.docx": d.accept("acme", zip_bomb_docx(), "bomb.docx"),
        }
        good = [d.accept("acme", paragraphs(20, f"good-{i}")) for i in range(4)]
        # Binary garbage named .txt never gets in: the content type comes from the bytes.
        garbage = d.upload("acme", b"\x00\x01\xfe\xff" * 2048, "notes.txt")
        assert garbage.status_code == 415
        assert garbage.headers["content-type"].startswith("application/problem+json")

        d.start_worker("w1", KUBEMATE_WORKER__CONCURRENCY="1")
        ids = [a["task_id"] for a in [*poison.values(), *good]]
        final = d.wait_terminal("acme", ids)

        for accepted in good:
            task = final[accepted["task_id"]]
            assert task.state == TaskState.COMPLETED, task
            assert d.chunk_count("acme", accepted["document_id"]) == task.progress_total > 0
        letters = {letter["document_id"]: letter for letter in d.dead_letters()}
        assert len(letters) == 2
        for name, accepted in poison.items():
            task = final[accepted["task_id"]]
            assert task.state == TaskState.FAILED, (name, task)
            assert task.stage == "parsing" and task.attempts == 1, (name, task)
            letter = letters[accepted["document_id"]]
            assert set(letter) >= DEAD_LETTER_FIELDS
            assert letter["reason"] == task.error
            assert letter["task_id"] == accepted["task_id"] and letter["tenant_id"] == "acme"
            assert letter["stage"] == "parsing" and letter["attempts"] == "1"
            assert letter["collection"] == "default"
            assert datetime.fromisoformat(letter["failed_at"]).tzinfo is not None
        assert "PDF" in letters[poison["corrupt.pdf"]["document_id"]]["reason"]
        assert "zip bomb" in letters[poison["bomb.docx"]["document_id"]]["reason"]
        assert d.pending_entries() == []
