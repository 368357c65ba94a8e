"""``python -m kubemate_ingest.backup``: take a backup with the environment's settings and
apply retention; prints the backup's id. For the chart's CronJob, which runs the ingest image
(the ``kubemate`` command, with list, verify and restore, is the CLI package's)."""

from __future__ import annotations

from kubemate.logs import configure_logging
from kubemate_ingest.backup.wiring import take_backup
from kubemate_ingest.settings import IngestSettings


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.observability, service="backup")
    print(take_backup(settings).id)


if __name__ == "__main__":
    main()
