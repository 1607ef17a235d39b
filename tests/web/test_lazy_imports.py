"""No sidecar loads redis-py (about 9 MiB and 0.1 s of start-up): it reaches Redis through ``state.resp``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """\
import asyncio, sys
from sidecar.config import load_config
from sidecar.web.services import Services

async def main() -> None:
    config = load_config(sys.argv[1] or None, {"SIDECAR_STATE_DIR": sys.argv[2]})
    services = Services(config, environ={"SIDECAR_STATE_DIR": sys.argv[2]})
    async with services.running():
        store = type(services.jobs.store).__name__ if services.jobs else None
        print("redis" in sys.modules, store, type(services.fleet.redis).__name__)

asyncio.run(main())
"""

REDIS_LEDGER = """\
ledger: {backend: redis, url: "redis://127.0.0.1:9/0"}
providers:
  replicate: {upstream: "http://127.0.0.1:9"}
"""


@pytest.mark.parametrize(("config", "loaded"), [
    ("", "False SqliteStore NoneType"),  # the embedded default: SQLite ledger, local limits
    (REDIS_LEDGER, "False None RespClient"),  # no route creates jobs: only the fleet uses it
])
def test_redis_py_is_never_imported(tmp_path: Path, config: str, loaded: str) -> None:
    path = ""
    if config:
        path = str(tmp_path / "sidecar.yaml")
        Path(path).write_text(config)
    done = subprocess.run([sys.executable, "-c", SCRIPT, path, str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == loaded
