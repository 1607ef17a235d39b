"""Read one Prometheus sample from a running sidecar app's own registry."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sidecar.web.app import SERVICES

__all__ = ["metric"]


def metric(client: Any, name: str, **labels: str) -> float:
    """A sample's value from the app's own registry (0 when absent)."""
    text = client.app[SERVICES].metrics.render().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0
