"""The registry builds one runtime per provider, typed by kind, and opens and closes their connections."""

from __future__ import annotations

import pytest

from sidecar.config import DownloadConfig
from sidecar.ops.metrics import Metrics
from sidecar.policy.breaker import CircuitBreaker
from sidecar.policy.host_breakers import HostBreakers
from sidecar.providers.registry import ProviderRegistry
from sidecar.providers.runtime import DownloadRuntime, ProxyRuntime

from ..support.configs import keyed, provider, sidecar_config
from ..support.fakes import FakeClock


def registry(clock: FakeClock | None = None) -> ProviderRegistry:
    cfg = sidecar_config(
        keyed("p", "http://127.0.0.1:9/base/"),
        provider("empty", ""),
        provider("dl", "", kind="download", download=DownloadConfig(allow_private_networks=True)),
    )
    return ProviderRegistry(cfg, metrics=Metrics("t"), clock=clock or FakeClock())


def test_each_kind_gets_its_own_runtime_with_only_what_it_uses() -> None:
    """A proxy has a breaker, routes and auth; a download has per-host breakers and its settings."""
    reg = registry()
    p, dl = reg.providers["p"], reg.providers["dl"]
    assert isinstance(p, ProxyRuntime) and isinstance(dl, DownloadRuntime)
    assert isinstance(p.control, CircuitBreaker) and p.control is p.breaker
    assert p.base_url == "http://127.0.0.1:9/base" and dict(p.auth_headers) == {
        "Authorization": "Bearer sk-test-SECRET-abc123"}
    assert isinstance(dl.control, HostBreakers) and dl.control is dl.hosts
    assert dl.download.allow_private_networks is True
    assert not hasattr(dl, "breaker") and not hasattr(dl, "routes")
    assert not hasattr(p, "hosts") and not hasattr(p, "session")
    assert reg.known == ["dl", "empty", "p"]


def test_a_download_follows_the_providers_own_route_whatever_the_path() -> None:
    """Downloads have no named routes: every request gets the provider's policy, named "other"."""
    dl = registry().providers["dl"]
    route = dl.route_for("GET", "/anything")
    assert route is dl.default_route and route.name == "other"


async def test_start_opens_each_runtimes_connections_and_close_drops_them() -> None:
    """A proxy gets its pool and a download its session at start; an unconfigured proxy gets none."""
    reg = registry()
    p, empty, dl = reg.providers["p"], reg.providers["empty"], reg.providers["dl"]
    assert isinstance(p, ProxyRuntime) and isinstance(empty, ProxyRuntime)
    assert isinstance(dl, DownloadRuntime)
    with pytest.raises(RuntimeError, match="not open"):
        _ = p.pool
    await reg.start()
    try:
        assert p.pool.prefix == "/base"
        assert not dl.session.closed
        with pytest.raises(RuntimeError, match="no upstream"):
            _ = empty.pool
    finally:
        session = dl.session
        await reg.close()
    assert session.closed
    with pytest.raises(RuntimeError):
        _ = p.pool
    with pytest.raises(RuntimeError):
        _ = dl.session
