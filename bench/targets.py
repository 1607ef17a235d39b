"""The servers under test: how each one is configured, started and found ready.

Each start gets a fresh directory and fresh ports, so a repeat never inherits a warm cache or a
leaked connection from the last one. Proxies run on the proxy core; upstreams share the load core.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench import configs
from bench.baseline import Baseline
from bench.procs import Proc, ProcessSet, StartError, free_port, wait_ready


@dataclass(frozen=True, slots=True)
class Running:
    """A started target: `base_url + SMALL_PATH` is what wrk hits; `proc` is None when shared."""

    base_url: str
    proc: Proc | None
    rss_pid: int
    ready_s: float | None


@dataclass(frozen=True, slots=True)
class Env:
    """What a target needs to start: where to write, which cores, which upstream."""

    procs: ProcessSet
    workdir: Path
    proxy_cpu: int | None
    load_cpu: int | None
    repo: Path
    upstream: Running
    # The older sidecar for `sidecar-before`, or why it could not be prepared (None: not asked for).
    baseline: Baseline | str | None = None


Starter = Callable[[Env, str], Running]


@dataclass(frozen=True, slots=True)
class Target:
    """`request` is the wrk script's kind (`bench.wrk.SCRIPTS`): `get` for the GET targets, `post`
    for a POST with a distinct Idempotency-Key each, `replay` for one stored key repeated."""

    name: str
    label: str
    start: Starter
    request: str = "get"


def _nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _fresh_dir(workdir: Path, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))


def _nginx(procs: ProcessSet, name: str, dir_: Path, conf: str, cpu: int | None) -> Proc:
    (dir_ / "nginx.conf").write_text(conf)
    conf, log = str(dir_ / "nginx.conf"), str(dir_ / "error.log")
    argv = [_nginx_bin(), "-p", f"{dir_}/", "-c", conf, "-e", log]
    return procs.spawn(name, argv, cpu=cpu)


def start_upstream(procs: ProcessSet, workdir: Path, cpu: int | None) -> Running:
    """The nginx upstream all proxies forward to (started once per run)."""
    dir_, port = _fresh_dir(workdir, "upstream"), free_port()
    proc = _nginx(procs, "upstream", dir_, configs.nginx_upstream(dir_, port), cpu)
    ready = wait_ready(proc, port, configs.SMALL_PATH)
    return Running(f"http://127.0.0.1:{port}", proc, proc.pid, ready)


def _direct(env: Env, upstream: str) -> Running:
    # The limit: wrk straight at the upstream. Nothing to start or stop.
    return Running(upstream, None, env.upstream.rss_pid, None)


def _haproxy(env: Env, upstream: str) -> Running:
    dir_, port = _fresh_dir(env.workdir, "haproxy"), free_port()
    conf = dir_ / "haproxy.cfg"
    conf.write_text(configs.haproxy(port, _port_of(upstream)))
    proc = env.procs.spawn("haproxy", ["haproxy", "-db", "-f", str(conf)], cpu=env.proxy_cpu)
    return _ready(env, proc, f"http://127.0.0.1:{port}", port, configs.SMALL_PATH)


def _nginx_proxy(env: Env, upstream: str) -> Running:
    dir_, port = _fresh_dir(env.workdir, "nginx"), free_port()
    conf = configs.nginx_proxy(dir_, port, _port_of(upstream))
    proc = _nginx(env.procs, "nginx-proxy", dir_, conf, env.proxy_cpu)
    return _ready(env, proc, f"http://127.0.0.1:{port}", port, configs.SMALL_PATH)


def _bare(env: Env, upstream: str) -> Running:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_proxy", "--port", str(port), "--upstream", upstream]
    proc = env.procs.spawn("bare-aiohttp", argv, cpu=env.proxy_cpu, cwd=env.repo)
    return _ready(env, proc, f"http://127.0.0.1:{port}", port, configs.SMALL_PATH)


def _sidecar(env: Env, upstream: str) -> Running:
    """`python -m sidecar` on its own config file; ready means `/health/ready` 200 on the ops port."""
    return start_sidecar(env, upstream, configs.sidecar)


def _sidecar_before(env: Env, upstream: str) -> Running:
    """The sidecar at the baseline revision, from its own tree and venv, on the same config."""
    if not isinstance(env.baseline, Baseline):
        raise StartError(f"baseline: {env.baseline or 'not prepared'}")
    return start_sidecar(env, upstream, configs.sidecar, python=str(env.baseline.python),
                         cwd=env.baseline.src, name="sidecar-before")


def _sidecar_limited(env: Env, upstream: str) -> Running:
    """The same, with a rate limit far above the load: the cost of the local limiter's checks."""
    return start_sidecar(env, upstream, partial(configs.sidecar, limited=True))


def _sidecar_limited_redis(env: Env, upstream: str) -> Running:
    """The same limit shared through a redis-server of its own (a take and a give-back a call, batched
    per loop turn)."""
    url = _redis(env)
    return start_sidecar(env, upstream, partial(configs.sidecar, limited=True, redis_url=url))


def _redis(env: Env) -> str:
    """A redis-server of its own on the load core; its URL."""
    return start_redis(env.procs, env.workdir, env.load_cpu)


def start_redis(procs: ProcessSet, workdir: Path, cpu: int | None) -> str:
    """A redis-server of its own on a free loopback port, nothing persisted; its URL.

    Its readiness is the sidecars' (a sidecar on Redis is ready only after its first connect).
    """
    dir_, port = _fresh_dir(workdir, "redis"), free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(dir_)]
    procs.spawn("redis", argv, cpu=cpu)
    return f"redis://127.0.0.1:{port}/0"


def _sidecar_post(env: Env, upstream: str) -> Running:
    """`POST /small` declared as a plain route: keyed POSTs forwarded, no ledger (the baseline)."""
    return start_sidecar(env, upstream, partial(configs.sidecar, post_route=True))


def _sidecar_ledger_sqlite(env: Env, upstream: str) -> Running:
    """The same route as `creates_job`, its ledger a SQLite file in the run's directory."""
    path = _fresh_dir(env.workdir, "ledger") / "ledger.sqlite3"
    return start_sidecar(env, upstream, partial(configs.sidecar, creates_job=True, sqlite_path=path))


def _sidecar_ledger_redis(env: Env, upstream: str) -> Running:
    """The same route as `creates_job`, its ledger on a redis-server of its own."""
    url = _redis(env)
    return start_sidecar(env, upstream, partial(configs.sidecar, creates_job=True, redis_url=url))


def start_sidecar(env: Env, upstream: str, config: Callable[[int, int, str], str], *,
                  python: str = sys.executable, cwd: Path | None = None,
                  name: str = "sidecar", environ: Mapping[str, str] | None = None,
                  wrapper: Sequence[str] = (), ready_deadline: float = 20.0) -> Running:
    """`python -m sidecar` run from `cwd` (the repo by default), so that is the tree it imports;
    `environ` replaces the inherited environment (a fleet's sidecars differ in their instance id);
    `wrapper` goes before the interpreter (valgrind, for the instruction counts)."""
    dir_, port, ops_port = _fresh_dir(env.workdir, name), free_port(), free_port()
    conf = dir_ / "sidecar.yaml"
    conf.write_text(config(port, ops_port, upstream))
    argv = [
        *wrapper,
        python,
        "-m",
        "sidecar",
        "--config",
        str(conf),
        "--port",
        str(port),
        "--ops-port",
        str(ops_port),
    ]
    # SIGTERM starts a 5 s drain (server.drain_time: readiness 503, still serving) that the bench has
    # no use for: cut it short.
    proc = env.procs.spawn(name, argv, cpu=env.proxy_cpu, env=environ, cwd=cwd or env.repo,
                           stop_grace=0.5)
    return _ready(env, proc, f"http://127.0.0.1:{port}/bench", ops_port, "/health/ready",
                  ready_deadline)


def _ready(env: Env, proc: Proc, base_url: str, port: int, path: str,
           deadline: float = 20.0) -> Running:
    try:
        ready = wait_ready(proc, port, path, deadline)
    except StartError:
        env.procs.stop(proc)
        raise
    return Running(base_url, proc, proc.pid, ready)


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


DIRECT = Target("direct", "nginx upstream, direct (the limit)", _direct)
HAPROXY = Target("haproxy", "HAProxy (nbthread 1)", _haproxy)
NGINX = Target("nginx", "nginx proxy (1 worker)", _nginx_proxy)
BARE = Target("bare", "bare aiohttp + uvloop proxy", _bare)
SIDECAR = Target("sidecar", "sidecar (default policies)", _sidecar)
SIDECAR_BEFORE = Target(
    "sidecar-before", "sidecar before the layout change (baseline rev)", _sidecar_before
)
LIMITED = Target("sidecar-limited", "sidecar, rate limit far above the load", _sidecar_limited)
LIMITED_REDIS = Target(
    "sidecar-limited-redis", "sidecar, the same limit shared through Redis", _sidecar_limited_redis
)
POST = Target(
    "sidecar-post", "sidecar, keyed POST on a plain route (no ledger)", _sidecar_post, "post"
)
LEDGER_SQLITE = Target(
    "sidecar-ledger-sqlite", "sidecar, keyed POST, creates_job, ledger on SQLite",
    _sidecar_ledger_sqlite, "post",
)
LEDGER_REDIS = Target(
    "sidecar-ledger-redis", "sidecar, keyed POST, creates_job, ledger on Redis",
    _sidecar_ledger_redis, "post",
)
REPLAY = Target(
    "sidecar-replay", "sidecar, one stored key repeated (replay, SQLite)", _sidecar_ledger_sqlite,
    "replay",
)
ALL = (
    DIRECT, HAPROXY, NGINX, BARE, SIDECAR, SIDECAR_BEFORE, LIMITED, LIMITED_REDIS,
    POST, LEDGER_SQLITE, LEDGER_REDIS, REPLAY,
)
