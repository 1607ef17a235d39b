"""Redis key names for the fleet's shared state, under a prefix, with provider names escaped.

Every key of one provider carries the same hash tag (``{<provider>}``), so a script touching a
provider's keys stays in one slot should the Redis be a cluster. Names are percent-escaped outside
``[A-Za-z0-9_.-]``: a provider called ``a:b`` and a provider ``a`` with a route ``b`` never share a
key, and no name can open or close a hash tag.
"""

from __future__ import annotations

import re

from sidecar.policy.admission import PROVIDER_SCOPE

__all__ = ["DEFAULT_PREFIX", "FleetKeys", "escape"]

DEFAULT_PREFIX = "sidecar:"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def escape(name: str) -> str:
    """Percent-encode every byte outside ``[A-Za-z0-9_.-]`` (UTF-8 for non-ASCII)."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)


class FleetKeys:
    """``<prefix>{<provider>}:<what>``; a route scope adds ``:<route>`` (the provider's own is ``*``)."""

    __slots__ = ("_bases", "_scopes", "prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        # Names are escaped once: the same few providers and scopes are asked for on every call.
        self._bases: dict[str, str] = {}
        self._scopes: dict[str, str] = {PROVIDER_SCOPE: PROVIDER_SCOPE}

    def _base(self, provider: str) -> str:
        base = self._bases.get(provider)
        if base is None:
            base = self._bases[provider] = f"{self.prefix}{{{escape(provider)}}}"
        return base

    def _scope(self, scope: str) -> str:
        escaped = self._scopes.get(scope)
        if escaped is None:
            escaped = self._scopes[scope] = escape(scope)
        return escaped

    def pause(self, provider: str) -> str:
        return f"{self._base(provider)}:pause"

    def aimd(self, provider: str) -> str:
        return f"{self._base(provider)}:aimd"

    def tat(self, provider: str, scope: str) -> str:
        return f"{self._base(provider)}:tat:{self._scope(scope)}"

    def leases(self, provider: str, scope: str) -> str:
        return f"{self._base(provider)}:leases:{self._scope(scope)}"

    def notices(self) -> str:
        """The channel on which a pause or a lowered concurrency is announced to every sidecar."""
        return f"{self.prefix}notices"

    def breaker(self, provider: str) -> str:
        return f"{self._base(provider)}:breaker"

    def trial(self, provider: str) -> str:
        return f"{self._base(provider)}:breaker:trial"
