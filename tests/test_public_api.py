"""The packages' public names: what ``__all__`` lists exists, and nothing public is left out."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

MODULES = [
    "sidecar.limits", "sidecar.limits.api", "sidecar.limits.queue", "sidecar.limits.local",
    "sidecar.limits.fallback", "sidecar.fleet", "sidecar.fleet.keys", "sidecar.fleet.client",
    "sidecar.fleet.limiter", "sidecar.fleet.breaker", "sidecar.policy.gcra",
    "sidecar.policy.concurrency", "sidecar.policy.pause", "sidecar.policy.admission",
]


def _public(module: ModuleType) -> set[str]:
    """Classes and functions defined in ``module`` whose names don't start with ``_``."""
    return {
        name for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    """Every name in __all__ exists; every public class and function defined there is listed."""
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert all(hasattr(module, item) for item in exported)
    if not name.endswith(("limits", "fleet")):  # the packages re-export, they define nothing
        missing = _public(module) - exported
        assert not missing, missing
