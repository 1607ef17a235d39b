"""Command line: ``sidecar [--config PATH] ...`` runs the server; ``sidecar check-config PATH`` checks."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence

from .config import SidecarConfig
from .config.load import ConfigError, dump_effective, load_config
from .logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sidecar", description="Egress sidecar for paid AI APIs.")
    p.add_argument(
        "--config", help="YAML config file (default: $SIDECAR_CONFIG or the embedded default)"
    )
    p.add_argument("--host", help="proxy listener address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="proxy listener port (default 8080)")
    p.add_argument("--ops-host", help="ops listener address (default 127.0.0.1)")
    p.add_argument("--ops-port", type=int, help="ops listener port (default 9901)")
    p.add_argument("--log-format", choices=("json", "console"), default="json")
    return p


def _apply_cli(config: SidecarConfig, args: argparse.Namespace) -> SidecarConfig:
    overrides = {
        k: v
        for k, v in (
            ("host", args.host),
            ("port", args.port),
            ("ops_host", args.ops_host),
            ("ops_port", args.ops_port),
        )
        if v is not None
    }
    return dataclasses.replace(config, server=dataclasses.replace(config.server, **overrides))


def check_config(path: str) -> int:
    try:
        config = load_config(path, os.environ)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    sys.stdout.write(dump_effective(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check-config"]:
        if len(argv) != 2:
            print("usage: sidecar check-config PATH", file=sys.stderr)
            return 2
        return check_config(argv[1])
    args = _parser().parse_args(argv)
    try:
        config = _apply_cli(load_config(args.config, os.environ), args)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    configure_logging(args.log_format)
    # Process-wide switch of prometheus_client: the *_created series would double the scrape size.
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]
    from .web.server import serve

    _run(serve(config))
    return 0


def _run(coro: object) -> None:
    """Run on uvloop when it is installed: a faster event loop for the same code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
