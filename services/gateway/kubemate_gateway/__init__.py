"""Gateway: verifies credentials, signs the caller's identity, and routes /v1/* to the services."""
