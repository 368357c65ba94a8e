"""Retrying a dead letter: the job goes back on the ingest stream with a fresh start. No FastAPI.

The task is reset (PENDING, attempts 0, no error) before the job is queued: a worker that took
the job while the task still said FAILED would take it for finished and drop it. If queueing
then fails, the task is put back to FAILED with its reason, so nothing is left PENDING with no
job behind it; the dead letter stays for another try.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubemate.errors import DeadLetterNotFound, DocumentNotFound, KubemateError, TaskNotFound
from kubemate.logs import get_logger
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.tasks import TaskView
from kubemate.queue.dead_letters import DeadLetter, DeadLetters

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Requeued:
    letter: DeadLetter
    task: TaskView
    entry_id: str  # of the job on the ingest stream


def retry_dead_letter(
    tenant_id: str, entry_id: str, *, dead_letters: DeadLetters, store: MetadataStore
) -> Requeued:
    letter = dead_letters.get(tenant_id, entry_id)
    try:
        task = store.documents.reset_task(tenant_id, letter.task_id)
    except (TaskNotFound, DocumentNotFound):
        # The document was deleted since it failed: nothing to retry, and nothing to keep.
        dead_letters.delete(letter.entry_id)
        raise DocumentNotFound(
            f"document {letter.document_id} of this dead letter no longer exists; "
            "the dead letter was removed"
        ) from None
    try:
        new_entry = dead_letters.requeue(letter)
    except KubemateError:
        store.documents.fail_task(
            tenant_id, letter.task_id, stage=letter.stage or "pending", error=letter.reason
        )
        raise
    if new_entry is None:
        # A concurrent retry of the same entry queued it first: the job is queued once.
        raise DeadLetterNotFound(f"dead letter {entry_id} was retried already")
    log.info(
        "dead_letter.retried",
        entry_id=entry_id,
        new_entry_id=new_entry,
        document_id=letter.document_id,
        task_id=letter.task_id,
    )
    return Requeued(letter, task, new_entry)
