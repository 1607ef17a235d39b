"""Run both listeners, and shut down the way a sidecar must.

On SIGTERM/SIGINT readiness turns 503 at once, but both listeners keep serving for
``server.drain_time`` (the bot beside us is shutting down too and still makes its last calls);
then they stop accepting, in-flight requests get ``server.shutdown_grace``, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from . import __version__
from .app import Role, create_app, runner_kwargs
from .config import SidecarConfig
from .gateway import Gateway
from .logs import get_logger
from .metrics import Metrics


async def serve(config: SidecarConfig, *, stop: asyncio.Event | None = None) -> None:
    log = get_logger("server")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gw = Gateway(config, metrics=Metrics(__version__))
    await gw.start()
    srv = config.server
    runners: list[web.AppRunner] = []
    try:
        bound: dict[str, str] = {}
        listeners: tuple[tuple[Role, str, int], ...] = (
            ("proxy", srv.host, srv.port),
            ("ops", srv.ops_host, srv.ops_port),
        )
        for role, host, port in listeners:
            runner = web.AppRunner(
                create_app(config, role=role, gateway=gw), **runner_kwargs(config)
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
            providers=gw.known,
        )
        await stop.wait()
        gw.draining = True
        log.warning("draining", drain_time=srv.drain_time, shutdown_grace=srv.shutdown_grace)
        await asyncio.sleep(srv.drain_time)
        log.warning("stopping", inflight=sum(rt.inflight for rt in gw.providers.values()))
    finally:
        # cleanup() closes the listening sockets, then waits up to shutdown_grace for handlers.
        await asyncio.gather(*(r.cleanup() for r in runners))
        await gw.close()
        log.info("stopped")


def _address(runner: web.AppRunner) -> str:
    addrs = runner.addresses
    if not addrs:
        return "?"
    host, port = addrs[0][0], addrs[0][1]
    return f"{host}:{port}"
