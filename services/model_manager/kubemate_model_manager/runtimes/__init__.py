"""Model management: the runtimes that hold models (Ollama, the local llama.cpp store)."""
