"""Command line: ``sidecar [serve] [options]`` runs the server, ``sidecar check-config [PATH]`` checks,
``sidecar schema`` prints the configuration file's JSON Schema.

Both load the configuration the same way and compute the same warnings (``config_warnings``):
check-config prints them on stderr, so that its stdout stays pure YAML; the server logs them as
warning lines before it starts listening.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from typing import cast

from . import __version__
from .config import SidecarConfig
from .config.dump import ConfigWarning, config_warnings, referenced_variables, unconfigured_providers
from .config.json_schema import render_schema
from .config.load import ConfigError, dump_effective, parse_config, read_document
from .logs import LEVELS, LogFormat, LogLevel, configure_logging, get_logger

COMMANDS = ("serve", "check-config", "schema")

ENVIRONMENT = """\
environment variables:
  SIDECAR_CONFIG               the configuration file when --config / PATH is not given
  SIDECAR_ADMIN_TOKEN          /admin then requires "Authorization: Bearer <token>"; unset,
                               /admin answers only on a listener bound to loopback
  SIDECAR_FLEET_LEASE_TTL      how long a fleet concurrency slot outlives a sidecar that died
                               holding it (a duration, default 30s; ledger.backend: redis)
  SIDECAR_STATE_DIR            where the SQLite job ledger lives (default /var/lib/sidecar when
                               writable, else <tmp>/sidecar-<uid>)
  SIDECAR_INSTANCE_ID          this sidecar's name in the job ledger (default: HOSTNAME, then
                               the host name); keep it across restarts, unique per sidecar
  CB_FAILURE_THRESHOLD         sets defaults.breaker.failure_threshold
  CB_RECOVERY_TIMEOUT          sets defaults.breaker.recovery_timeout (integer milliseconds, or "30s")
  CB_MONITORING_PERIOD         sets defaults.breaker.monitoring_period (integer milliseconds, or "60s")
  SIDECAR_<PROVIDER>_UPSTREAM  replaces one provider's upstream (name upper-cased, "-" as "_");
                               one that names no provider is an error
  ${VAR} in a config value     replaced by the variable's value (unset: empty)
  auth.env of each provider    names the variable holding that provider's API key
"""


def _help_epilog() -> str:
    """The environment section, plus the variables the embedded default configuration reads."""
    variables = referenced_variables(read_document(None, {})[1])
    lines = [f"  {name:<28} {', '.join(dict.fromkeys(keys))}" for name, keys in variables.items()]
    default = "\n".join(["variables the embedded default configuration reads:", *lines])
    return (f"{ENVIRONMENT}\n{default}\n\n'sidecar serve --help' lists the server's options. Without a "
            "command, sidecar serves:\n'sidecar --port 8080' is 'sidecar serve --port 8080'.")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sidecar", description="Egress sidecar for bots on paid AI APIs.",
        epilog=_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"sidecar {__version__}")
    commands = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    server = commands.add_parser(
        "serve", help="run the proxy and ops listeners (the default command)",
        description="Run the proxy and ops listeners until SIGTERM/SIGINT.")
    server.add_argument(
        "--config", metavar="PATH",
        help="YAML config file (default: $SIDECAR_CONFIG or the embedded default)")
    server.add_argument("--host", help="proxy listener address (default 127.0.0.1)")
    server.add_argument("--port", type=int, help="proxy listener port (default 8080)")
    server.add_argument("--ops-host", help="ops listener address (default 127.0.0.1)")
    server.add_argument("--ops-port", type=int, help="ops listener port (default 9901)")
    server.add_argument("--log-format", choices=("json", "console"), default="json",
                       help="log line format (default json)")
    server.add_argument("--log-level", choices=tuple(LEVELS), default="info",
                       help="lowest level logged, aiohttp's own records included (default info)")
    check = commands.add_parser(
        "check-config", help="validate a configuration and print it as effective YAML",
        description="Validate a configuration and print the effective configuration as YAML on "
                    "stdout (secrets redacted). Warnings go to stderr (exit 0); problems go to "
                    "stderr, one per line naming the key, and exit 2.")
    check.add_argument(
        "path", nargs="?", metavar="PATH",
        help="YAML config file (default: $SIDECAR_CONFIG, else the embedded default)")
    schema = commands.add_parser(
        "schema", help="print the configuration file's JSON Schema",
        description="Print the JSON Schema (draft-07) of the configuration file on stdout, for "
                    "editors (yaml-language-server) and CI. It is built from the loader's own rules.")
    schema.add_argument(
        "--partial", action="store_true",
        help="the schema of an override deep-merged onto the default configuration (the Helm "
             "chart's config: value): no required keys in merged blocks")
    return p


def _with_default_command(argv: list[str]) -> list[str]:
    """``sidecar --port 0`` is ``sidecar serve --port 0``: serving is the default command."""
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version")):
        return argv
    return ["serve", *argv]


def _load(path: str | None,
          environ: Mapping[str, str]) -> tuple[SidecarConfig, list[ConfigWarning], dict[str, str]]:
    """The configuration, its warnings, and each unconfigured provider's missing variable."""
    _, document = read_document(path, environ)
    config = parse_config(document, environ)
    return (config, config_warnings(document, config, environ),
            unconfigured_providers(document, config, environ))


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


def check_config(path: str | None, environ: Mapping[str, str] = os.environ) -> int:
    """Print the effective configuration (stdout) and its warnings (stderr); 2 on problems."""
    try:
        config, warnings, _ = _load(path, environ)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(dump_effective(config))
    return 0


def serve(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    try:
        config, warnings, unconfigured = _load(args.config, environ)
        config = _apply_cli(config, args)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    configure_logging(cast(LogFormat, args.log_format), level=cast(LogLevel, args.log_level))
    log = get_logger("config")
    for warning in warnings:
        log.warning("config_warning", key=warning.key, detail=warning.message)
    # Process-wide switch of prometheus_client: the *_created series would double the scrape size.
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]
    from .web.server import serve as run_server

    _run(run_server(config, unconfigured=unconfigured))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(_with_default_command(list(sys.argv[1:] if argv is None else argv)))
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "schema":
        sys.stdout.write(render_schema(partial=args.partial))
        return 0
    return serve(args)


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
