"""Answers a reader can check: quoted sentences with their citations, "cannot answer" when the
evidence is too weak, and the grounding of generated answers. No FastAPI here."""
