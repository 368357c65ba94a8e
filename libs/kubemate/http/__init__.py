"""What every FastAPI service shares: problem+json errors, metrics, request context, health."""
