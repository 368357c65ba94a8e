"""Processes the embedded (one-machine) stack runs for itself: Redis, Milvus, the supervisor."""
