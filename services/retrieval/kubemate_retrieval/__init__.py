"""Retrieval service: searches a tenant's chunks and answers questions with citations."""
