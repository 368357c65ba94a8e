"""Model manager: which models serve chat and embeddings, and (later) pulling and deploying them."""
