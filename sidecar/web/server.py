"""Run both listeners, and shut down the way a sidecar must.

On SIGTERM/SIGINT readiness turns 503 at once, but both listeners keep serving for
``server.drain_time`` (the bot beside us is shutting down too and still makes its last calls);
then they stop accepting, in-flight requests get ``server.shutdown_grace``, and the process exits 0.

Both listeners also bound how long a client may take to send a request head (slowloris): aiohttp
only has an idle timeout, so ``SidecarRunner`` makes connections whose head must be complete within
``header_read_timeout`` of its first byte, or they get a 408 and are closed. (What that needs of
aiohttp's internals is in ``aiohttp_server_compat``.)
"""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .. import __version__
from ..config import SidecarConfig
from ..config.schema import upstream_variable
from ..logs import get_logger
from .aiohttp_server_compat import HeadTimeoutProtocol, ProtocolRunner
from .app import SHORTCUT, Role, create_app, runner_kwargs
from .services import Services


class SidecarRunner(ProtocolRunner):
    """An ``AppRunner`` whose connections time out a slow request head (``header_read_timeout``),
    and whose server serves a provider's path without the router (the app's ``SHORTCUT``)."""

    __slots__ = ()

    def __init__(
        self, app: web.Application, *, header_read_timeout: float, **kwargs: Any
    ) -> None:
        protocol = functools.partial(HeadTimeoutProtocol, head_timeout=header_read_timeout)
        super().__init__(app, protocol=protocol, shortcut=app.get(SHORTCUT), **kwargs)


async def serve(
    config: SidecarConfig,
    *,
    stop: asyncio.Event | None = None,
    unconfigured: Mapping[str, str] | None = None,
) -> None:
    """Serve until ``stop`` (or SIGTERM/SIGINT); ``unconfigured``: provider -> missing variable."""
    missing = {
        name: (unconfigured or {}).get(name) or upstream_variable(name)
        for name, provider in config.providers.items() if not provider.configured
    }
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Services(config).running() as services:
            await _listen(services, stop, missing)
    finally:
        get_logger("server").info("stopped")


async def _listen(services: Services, stop: asyncio.Event, missing: Mapping[str, str]) -> None:
    """Serve both listeners until ``stop``, then drain and stop them (the services outlive them)."""
    log = get_logger("server")
    config = services.config
    srv = config.server
    runners: list[web.AppRunner] = []
    try:
        bound: dict[str, str] = {}
        listeners: tuple[tuple[Role, str, int], ...] = (
            ("proxy", srv.host, srv.port),
            ("ops", srv.ops_host, srv.ops_port),
        )
        for role, host, port in listeners:
            runner = SidecarRunner(
                create_app(config, role=role, services=services),
                header_read_timeout=srv.header_read_timeout, **runner_kwargs(config),
            )
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
            await site.start()
            bound[role] = _address(runner)
        log.info(
            "listening",
            version=__version__,
            proxy=bound["proxy"],
            ops=bound["ops"],
            configured=[name for name in services.registry.known if name not in missing],
            unconfigured=missing,  # names only: never a value, a key or an upstream URL
        )
        await stop.wait()
        services.status.draining = True
        log.warning("draining", drain_time=srv.drain_time, shutdown_grace=srv.shutdown_grace)
        await asyncio.sleep(srv.drain_time)
        inflight = sum(rt.inflight for rt in services.registry.providers.values())
        log.warning("stopping", inflight=inflight)
    finally:
        # cleanup() closes the listening sockets, then waits up to shutdown_grace for handlers.
        await asyncio.gather(*(r.cleanup() for r in runners))


def _address(runner: web.AppRunner) -> str:
    addrs = runner.addresses
    if not addrs:
        return "?"
    host, port = addrs[0][0], addrs[0][1]
    return f"{host}:{port}"
