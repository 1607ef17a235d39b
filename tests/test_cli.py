"""The command line as a user meets it, through the installed ``sidecar`` console script:
subcommands, help, check-config and its warnings, the server on the embedded default, SIGTERM."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import aiohttp
import pytest
import yaml

from sidecar import __version__
from sidecar.config.load import load_config, parse_config
from sidecar.web.app import create_app

from .support.polling import eventually
from .support.process import SCRIPT, clean_environ, start_sidecar

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None,
            module: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the console script (or ``python -m sidecar``) in a clean environment plus ``env``."""
    command = [sys.executable, "-m", "sidecar"] if module else [str(SCRIPT)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60,
                          env=clean_environ(env))


class RecordingEnviron(Mapping[str, str]):
    """An empty environment that remembers every name the code looked up."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_the_console_script_is_installed() -> None:
    """The console script of setup.cfg exists beside this venv's python (pip install -e .)."""
    assert SCRIPT.is_file(), f"{SCRIPT}: run make venv"


def test_version() -> None:
    """sidecar --version prints the package version and exits 0."""
    out = run_cli("--version")
    assert (out.returncode, out.stdout.strip()) == (0, f"sidecar {__version__}")


async def test_help_lists_the_commands_and_every_variable_the_sidecar_reads() -> None:
    """Every environment name the code looks up (recorded, not listed by hand) is in --help."""
    env = RecordingEnviron()
    load_config(None, env)  # the embedded default: SIDECAR_CONFIG, CB_*, its ${VAR}s and keys
    parse_config({"providers": {"my-api": {"upstream": "https://a"}}}, env)
    create_app(load_config(None, {}), environ=env)  # the admin token
    names = {re.sub(r"^SIDECAR_\w+_UPSTREAM$", "SIDECAR_<PROVIDER>_UPSTREAM", n) for n in env.read}
    assert {"SIDECAR_CONFIG", "SIDECAR_ADMIN_TOKEN", "CB_RECOVERY_TIMEOUT", "SUPABASE_URL",
            "REPLICATE_API_TOKEN", "SIDECAR_<PROVIDER>_UPSTREAM"} <= names
    out = run_cli("--help")
    assert out.returncode == 0
    for name in sorted(names):
        assert name in out.stdout, name
    for command in ("serve", "check-config", "schema", "${VAR}"):
        assert command in out.stdout


def test_only_the_entry_points_touch_the_process_environment() -> None:
    """os.environ is read only where it is handed on as a mapping, so the recording above sees all."""
    readers = set()
    for path in sorted((ROOT / "sidecar").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb")
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                readers.add(path.relative_to(ROOT / "sidecar").as_posix())
    assert readers == {"__main__.py", "web/services.py"}


@pytest.mark.parametrize(("args", "usage"), [
    (("check-config", "--help"), "usage: sidecar check-config [-h] [PATH]"),
    (("serve", "--help"), "usage: sidecar serve"),
    (("schema", "--help"), "usage: sidecar schema [-h] [--partial]"),
])
def test_subcommand_help(args: tuple[str, ...], usage: str) -> None:
    """--help after a subcommand prints that command's help instead of reading a file "--help"."""
    out = run_cli(*args)
    assert out.returncode == 0 and out.stdout.startswith(usage), out.stderr
    if args[0] == "serve":
        assert "--log-level {debug,info,warning,error}" in out.stdout


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("check-config",),
                                  ("check-config", "--help"), ("serve", "--help"), ("schema",)])
def test_python_dash_m_is_the_same_command(args: tuple[str, ...]) -> None:
    """python -m sidecar gives the same output and exit code as the console script."""
    script, module = run_cli(*args), run_cli(*args, module=True)
    assert (module.returncode, module.stdout, module.stderr) == (
        script.returncode, script.stdout, script.stderr)


def test_schema_prints_the_published_json_schema() -> None:
    """sidecar schema prints the JSON Schema that the repository publishes, byte for byte."""
    out = run_cli("schema")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "schema" / "sidecar-config.schema.json").read_text()
    assert json.loads(out.stdout)["$schema"] == "http://json-schema.org/draft-07/schema#"
    partial = json.loads(run_cli("schema", "--partial").stdout)
    assert partial["title"].startswith("sidecar configuration override")


def test_check_config_without_a_path_uses_the_embedded_default() -> None:
    """No PATH and no SIDECAR_CONFIG: the embedded default, usable inside the image with no file."""
    out = run_cli("check-config")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == yaml.safe_load(
        run_cli("check-config", str(ROOT / "configs" / "sidecar.yaml")).stdout)


def test_check_config_without_a_path_reads_sidecar_config(tmp_path: Path) -> None:
    """No PATH: the file named by SIDECAR_CONFIG is the one checked."""
    path = tmp_path / "c.yaml"
    path.write_text("providers: {only: {upstream: https://a.example}}\n")
    out = run_cli("check-config", env={"SIDECAR_CONFIG": str(path)})
    assert out.returncode == 0, out.stderr
    assert list(yaml.safe_load(out.stdout)["providers"]) == ["only"]


def test_check_config_warnings_go_to_stderr_and_stdout_stays_yaml(tmp_path: Path) -> None:
    """Legal traps exit 0: stdout is exactly the YAML dump, stderr one warning line per trap."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "server: {drain_time: 30}\n"
        "providers:\n"
        "  supabase: {upstream: '${SUPABASE_URL}'}\n"
        "  replicate:\n"
        "    upstream: https://api.replicate.com\n"
        "    auth: {header: Authorization, prefix: 'Bearer ', env: REPLICATE_API_TOKEN}\n")
    out = run_cli("check-config", str(path))
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["server"]["drain_time"] == "30ms"
    assert out.stderr.splitlines() == [
        "warning: providers.supabase.upstream: ${SUPABASE_URL} is unset: supabase is "
        "unconfigured (503 provider_unconfigured)",
        "warning: providers.replicate.auth: REPLICATE_API_TOKEN is unset: no Authorization header "
        "is injected, so requests to replicate go without a key unless the bot sends one "
        "(expect the provider's 401)",
        "warning: server.drain_time: 30 is 30 ms: a bare integer duration is milliseconds "
        "(write '30s' for seconds, or '30ms' to say it is meant)",
    ]


def test_check_config_warns_about_no_providers(tmp_path: Path) -> None:
    """An empty provider list loads (exit 0) with a warning."""
    path = tmp_path / "c.yaml"
    path.write_text("providers: {}\n")
    out = run_cli("check-config", str(path))
    assert out.returncode == 0
    assert out.stderr.startswith("warning: providers: no providers are configured")


def test_check_config_refuses_an_upstream_variable_for_no_provider() -> None:
    """SIDECAR_OPENAI_UPSTREAM without an openai provider: exit 2, the line names the variable."""
    out = run_cli("check-config", env={"SIDECAR_OPENAI_UPSTREAM": "https://api.openai.com"})
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("SIDECAR_OPENAI_UPSTREAM: names no provider of this configuration")
    assert "api.openai.com" not in out.stderr


def test_check_config_names_the_yaml_error_position(tmp_path: Path) -> None:
    """A YAML syntax error names the file, the line and the column."""
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 8080\n providers: {}\n")
    out = run_cli("check-config", str(path))
    assert out.returncode == 2
    assert out.stderr.startswith(f"{path}: invalid YAML at line 3, column 2: ")


def test_check_config_prints_the_effective_config() -> None:
    """check-config on the shipped file exits 0 and prints YAML with all seven providers."""
    out = run_cli("check-config", str(ROOT / "configs" / "sidecar.yaml"))
    assert out.returncode == 0, out.stderr
    effective = yaml.safe_load(out.stdout)
    assert set(effective["providers"]) == {
        "replicate", "supabase", "elevenlabs", "synclabs", "huggingface", "bfl", "file-download",
    }


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    """A bad value exits 2 with one stderr line naming the dotted key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  replicate:\n    upstream: https://x\n    breaker: {failure_threshold: 0}\n")
    out = run_cli("check-config", str(bad))
    assert out.returncode == 2
    assert "providers.replicate.breaker.failure_threshold" in out.stderr


@pytest.mark.parametrize("content", [None, "providers: [unclosed"])
def test_check_config_refuses_missing_or_unparsable(tmp_path: Path, content: str | None) -> None:
    """A missing or unparsable file is exit 2 with a message."""
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    out = run_cli("check-config", str(path))
    assert out.returncode == 2 and out.stderr.strip()


def test_server_refuses_a_bad_file(tmp_path: Path) -> None:
    """The server exits 2 on a bad config instead of starting."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: 8080, colour: blue}\n")
    out = run_cli("--config", str(bad), "--port", "0", "--ops-port", "0")
    assert out.returncode == 2
    assert "server.colour" in out.stderr


async def test_default_config_without_network_fails_fast_then_opens(tmp_path: Path) -> None:
    """On the embedded default with no reachable upstream: 502 at once, then 503 circuit_open, logged."""
    # The default config as shipped, but replicate's upstream is a closed loopback port, so the test
    # is the same with or without a network (and never calls the real API).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    sp = await start_sidecar(
        None, tmp_path, env={"SIDECAR_REPLICATE_UPSTREAM": f"http://127.0.0.1:{closed}"}
    )
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{sp.proxy_port}/replicate/v1/models"
            codes = []
            for _ in range(4):
                async with asyncio.timeout(30):
                    resp = await s.get(url)
                body = await resp.json()
                codes.append((resp.status, body["error"]))
                if resp.status == 503:
                    assert body["error"] == "circuit_open"
                    assert int(resp.headers["Retry-After"]) >= 1
                    break
            assert codes[0] == (502, "upstream_unreachable")
            assert codes[-1] == (503, "circuit_open")
        await eventually(lambda: sp.events("breaker_transition"), timeout=5, interval=0.05)
        transition = sp.events("breaker_transition")[0]
        assert transition["provider"] == "replicate"
        assert (transition["from_state"], transition["to_state"]) == ("closed", "open")
        assert transition["level"] == "warning" and transition["reason"]
    finally:
        await sp.kill()


async def test_sigterm_drains_then_exits_zero(tmp_path: Path) -> None:
    """SIGTERM turns readiness 503 at once, keeps serving during drain_time, then exits 0."""
    sp = await start_sidecar("server: {drain_time: 3s, shutdown_grace: 2s}\nproviders: {}\n", tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            ready = f"http://127.0.0.1:{sp.ops_port}/health/ready"
            assert (await s.get(ready)).status == 200
            sp.proc.send_signal(signal.SIGTERM)

            async def readiness() -> int:
                async with s.get(ready) as resp:
                    return resp.status

            await eventually(readiness, until=lambda status: status == 503, timeout=2, interval=0.02)
            live = await s.get(f"http://127.0.0.1:{sp.proxy_port}/health/live")
            assert live.status == 200  # still serving while draining
        assert await sp.stop(wait=15) == 0
        assert sp.events("stopped")
    finally:
        await sp.kill()


async def test_startup_logs_warnings_and_the_provider_lists_without_values(tmp_path: Path) -> None:
    """`sidecar serve`: each warning is a JSON warning line; "listening" names configured and
    unconfigured providers (with the missing variable) and never a key or an upstream URL."""
    secret = "r8_FAKE_startup_secret_7f3a"
    config = (
        "server: {drain_time: 30, shutdown_grace: 1s}\n"
        "providers:\n"
        "  supabase: {upstream: '${SUPABASE_URL}'}\n"
        "  empty: {upstream: ''}\n"
        "  replicate:\n"
        "    upstream: ${REPLICATE_URL}\n"
        "    auth: {header: Authorization, prefix: 'Bearer ', env: REPLICATE_API_TOKEN}\n")
    upstream = "http://127.0.0.1:9/private-prefix"
    sp = await start_sidecar(config, tmp_path, script=True, args=("serve",),
                             env={"REPLICATE_API_TOKEN": secret, "REPLICATE_URL": upstream})
    try:
        assert await sp.stop(wait=15) == 0
    finally:
        await sp.kill()
    lines = [json.loads(raw) for raw in sp.stdout]
    warnings = [(w["level"], w["key"], w["detail"]) for w in sp.events("config_warning")]
    assert warnings == [
        ("warning", "providers.supabase.upstream",
         "${SUPABASE_URL} is unset: supabase is unconfigured (503 provider_unconfigured)"),
        ("warning", "server.drain_time",
         "30 is 30 ms: a bare integer duration is milliseconds "
         "(write '30s' for seconds, or '30ms' to say it is meant)")]
    (listening,) = sp.events("listening")
    assert listening["configured"] == ["replicate"]
    assert listening["unconfigured"] == {"empty": "SIDECAR_EMPTY_UPSTREAM",
                                         "supabase": "SUPABASE_URL"}
    assert lines.index(listening) > max(lines.index(w) for w in sp.events("config_warning"))
    everything = "\n".join(sp.stdout + sp.stderr)
    assert secret not in everything and "private-prefix" not in everything
