"""Kubemate shared library: settings, errors, ports with their adapters, text processing."""

__version__ = "0.1.0"
