"""Picks an object store adapter by the ``provider`` setting. Filled in by the object store work."""
