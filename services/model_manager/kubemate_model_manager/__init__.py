"""Model manager: pulls, lists, loads and deploys models on Ollama, llama.cpp and Kubernetes;
assigns the models that serve chat, embeddings and rerank; reports metered usage."""
