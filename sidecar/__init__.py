"""Egress sidecar: per-provider circuit breakers, safe retries and key injection for bot calls."""

__version__ = "0.1.0"

__all__ = ["__version__"]
