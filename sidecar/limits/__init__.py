"""Rate limits, concurrency and provider pauses: per sidecar, or shared by the fleet through Redis."""

from sidecar.limits.api import Completion, FleetUnavailable, Limiter, RateLimited, Slot
from sidecar.limits.fallback import FallbackLimiter
from sidecar.limits.local import LocalBackend, local_limiter
from sidecar.limits.queue import QueuedLimiter

__all__ = [
    "Completion",
    "FallbackLimiter",
    "FleetUnavailable",
    "Limiter",
    "LocalBackend",
    "QueuedLimiter",
    "RateLimited",
    "Slot",
    "local_limiter",
]
