"""The model registry: model files in the object store, their formats and GGUF headers."""
