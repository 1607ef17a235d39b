"""Config files for the servers under test, generated into the run's temp dir.

The reference proxies get the settings an operator would use for a keep-alive reverse proxy and
nothing exotic, so that the comparison is with what a team would deploy instead of the sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

# A realistic small API answer (a prediction status), about 200 bytes.
SMALL_BODY = json.dumps(
    {
        "id": "rrr4z55ocneqzikepnug6xezpe",
        "status": "succeeded",
        "model": "black-forest-labs/flux-schnell",
        "output": ["https://replicate.delivery/xezq/abc123/out-0.webp"],
        "metrics": {"predict_time": 1.234},
        "error": None,
    },
    separators=(",", ":"),
)
LARGE_SIZE = 64 * 1024
SMALL_PATH = "/small"
LARGE_PATH = "/large"

_NGINX_COMMON = """\
daemon off;
master_process on;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
"""

_NGINX_HTTP_COMMON = """\
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
"""


def nginx_upstream(dir_: Path, port: int) -> str:
    """The fast upstream: a fixed JSON body and a 64 KiB static file."""
    www = dir_ / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / LARGE_PATH.lstrip("/")).write_bytes(b"x" * LARGE_SIZE)
    return (
        _NGINX_COMMON.format(dir=dir_)
        + "http {\n"
        + _NGINX_HTTP_COMMON.format(dir=dir_)
        + f"""\
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {SMALL_PATH} {{
            default_type application/json;
            return 200 '{SMALL_BODY}';
        }}
        location = {LARGE_PATH} {{
            root {www};
            default_type application/octet-stream;
        }}
    }}
}}
"""
    )


def nginx_proxy(dir_: Path, port: int, upstream_port: int) -> str:
    """nginx as a keep-alive reverse proxy; buffers sized so 64 KiB never go to a temp file."""
    return (
        _NGINX_COMMON.format(dir=dir_)
        + "http {\n"
        + _NGINX_HTTP_COMMON.format(dir=dir_)
        + f"""\
    upstream up {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
        }}
    }}
}}
"""
    )


def haproxy(port: int, upstream_port: int) -> str:
    """HAProxy in http mode, one thread, reusing upstream connections."""
    return f"""\
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server up 127.0.0.1:{upstream_port}
"""


# Far above any load the bench makes (ten times its ~10,000 req/s): every call is admitted, so the
# figure is the cost of checking. Its burst is a second of its rate, as limits usually are: a
# fleet share lives at most a quarter of the burst's time (the budget stays exact), and a burst of
# 0.1 s (60,000,000/min with the same burst, this limit until it was changed) makes shares of 25 ms,
# which under the bench's load run out faster than the next one comes (docs/rate-limits.md).
UNREACHABLE_LIMIT = "{requests_per_minute: 6000000, burst: 100000, concurrency: 100000}"


def sidecar(port: int, ops_port: int, upstream: str, *, limited: bool = False,
            redis_url: str | None = None, post_route: bool = False, creates_job: bool = False,
            sqlite_path: Path | None = None, rate_limit: str | None = None,
            health_check: bool = True) -> str:
    """A sidecar configuration file: one provider `bench`, every default policy left on; `limited`
    adds a rate limit far above the load (`rate_limit`, a YAML flow mapping, another limit),
    `redis_url` shares the limits through that Redis (and holds the job ledger). `post_route`
    declares `POST /small` as a route, `creates_job` makes it a paid job (its keyed requests go
    through the ledger), `sqlite_path` places the ledger's file. `health_check=False` leaves out the
    provider's probe, for an upstream that counts every call it gets."""
    if redis_url:
        ledger = f"ledger: {{backend: redis, url: '{redis_url}', prefix: 'bench:'}}\n"
    elif sqlite_path is not None:
        ledger = f"ledger: {{backend: sqlite, path: '{sqlite_path}'}}\n"
    else:
        ledger = ""
    limit_text = rate_limit or (UNREACHABLE_LIMIT if limited else None)
    limit = f"    rate_limit: {limit_text}\n" if limit_text else ""
    health = f"    health: {{method: GET, path: {SMALL_PATH}, interval: 30s, timeout: 5s}}\n"
    routes = (
        "    routes:\n"
        f"      - {{name: create, method: POST, path: {SMALL_PATH}, "
        f"creates_job: {'true' if creates_job else 'false'}}}\n"
        if post_route or creates_job
        else ""
    )
    return f"""\
server: {{host: 127.0.0.1, port: {port}, ops_host: 127.0.0.1, ops_port: {ops_port}}}
{ledger}providers:
  bench:
    upstream: {upstream}
{health if health_check else ""}{limit}{routes}"""


# The create the ledger targets POST: a small JSON body, like a prediction's input.
POST_BODY = json.dumps(
    {"version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
     "input": {"prompt": "a lighthouse at dusk, oil painting", "num_outputs": 1}},
    separators=(",", ":"),
)
REPLAY_KEY = "bench:replay:0"
