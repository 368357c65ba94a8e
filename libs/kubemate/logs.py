"""structlog configured once per process: JSON lines on stdout, context bound per request/task."""

from __future__ import annotations

import logging
import sys

import structlog

from kubemate.settings import ObservabilityConfig


def configure_logging(config: ObservabilityConfig, service: str) -> None:
    level = getattr(logging, config.log_level)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if config.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks without local variables: locals can hold secrets and tenant data.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Route the standard library's records (uvicorn, celery, httpx) to stdout at the same level.
    logging.basicConfig(stream=sys.stdout, level=level, format="%(message)s", force=True)
    # httpx logs every request it sends at INFO: one unstructured line (and its cost) per call to
    # another service, on every request the gateway forwards. Shown at DEBUG.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(
            level if level <= logging.DEBUG else max(level, logging.WARNING)
        )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
