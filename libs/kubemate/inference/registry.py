"""Picks an inference adapter by the ``provider`` setting. Filled in by the inference work."""
