"""`python -m kubemate_worker`: run one Celery worker with the stream dispatcher."""

from __future__ import annotations

from prometheus_client import start_http_server

from kubemate_worker.fanout import units_queue
from kubemate_worker.main import create_celery
from kubemate_worker.settings import WorkerSettings


def main() -> None:
    settings = WorkerSettings()
    app = create_celery(settings)
    if settings.worker.metrics_port:
        # The worker has no HTTP API; Prometheus scrapes this port instead.
        start_http_server(settings.worker.metrics_port, addr=settings.worker.metrics_host)
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.worker.concurrency}",
            f"--hostname={settings.worker.consumer_name}@%h",
            # Its own direct queue is added by worker_direct; this one is shared.
            f"--queues={units_queue(settings.redis.ingest_stream)}",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
        ]
    )


if __name__ == "__main__":
    main()
