"""The worker's logs: one line per document at INFO, Celery's per-task lines at DEBUG only."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from kubemate_worker.main import CELERY_TASK_LOGGERS, create_celery
from kubemate_worker.settings import WorkerSettings


@pytest.fixture(autouse=True)
def _levels_restored() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in CELERY_TASK_LOGGERS}
    root = logging.getLogger().level
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().setLevel(root)


@pytest.mark.parametrize(
    ("log_level", "task_lines_shown"), [("INFO", False), ("WARNING", False), ("DEBUG", True)]
)
def test_celery_logs_its_per_task_lines_only_at_debug(
    log_level: str, task_lines_shown: bool
) -> None:
    create_celery(WorkerSettings(observability={"log_level": log_level}))
    for name in CELERY_TASK_LOGGERS:
        assert logging.getLogger(name).isEnabledFor(logging.INFO) is task_lines_shown
    # Everything else of Celery's keeps the configured level.
    assert logging.getLogger("celery.worker.consumer").isEnabledFor(logging.INFO) is (
        log_level != "WARNING"
    )
