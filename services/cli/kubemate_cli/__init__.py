"""The ``kubemate`` command: run the embedded stack (``up``), talk to it (``ingest``, ``ask``)."""
