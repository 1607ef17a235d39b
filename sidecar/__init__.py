"""Egress sidecar: per-provider circuit breakers, safe retries and key injection for a bot's outbound calls."""

__version__ = "0.1.0"

__all__ = ["__version__"]
