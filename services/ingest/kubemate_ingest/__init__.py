"""Ingest service: accepts uploads, stores them, and queues them for the workers."""
