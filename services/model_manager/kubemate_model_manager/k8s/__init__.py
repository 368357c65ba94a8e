"""Inference runtimes on Kubernetes: manifest rendering and a deployer on the official client."""
