"""Worker: a Celery worker that takes ingestion work from the Redis stream and indexes documents."""
