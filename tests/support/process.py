"""The real sidecar as a subprocess (``python -m sidecar``, or the ``sidecar`` console script that
pip installed): started from a YAML text, both pipes kept whole.

Both pipes are drained into lists (the secrets test greps them, and an undrained pipe would block the
sidecar); the ports come from its first "listening" log line; RSS is sampled from ``/proc``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

_NOT_INHERITED = (
    "SIDECAR_", "CB_", "REPLICATE_", "SUPABASE_", "ELEVENLABS_", "SYNC_LABS_", "BFL_", "HF_TOKEN",
)
# The console script of the package installed in this venv (setup.cfg's entry point).
SCRIPT = Path(sys.executable).with_name("sidecar")


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without sidecar settings or real provider keys, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
    env.update(extra or {})
    return env


@dataclass
class Sidecar:
    proc: asyncio.subprocess.Process
    proxy_port: int
    ops_port: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def ops(self) -> str:
        return f"http://127.0.0.1:{self.ops_port}"

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.stdout:
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"event": "unparsed", "text": raw})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def transitions(self) -> list[tuple[float, str, str]]:
        """(wall-clock epoch seconds, from_state, to_state) of each logged breaker transition."""
        return [
            (datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp(),
             e["from_state"], e["to_state"])
            for e in self.events("breaker_transition")
        ]

    def rss(self) -> int:
        """Resident set size in bytes (0 once the process is gone)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    async def stop(self, sig: int = signal.SIGTERM, wait: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), wait)
        await asyncio.wait_for(asyncio.gather(*self._pumps), 5)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for task in self._pumps:
            task.cancel()


async def _pump(stream: asyncio.StreamReader, sink: list[str]) -> None:
    async for raw in stream:
        sink.append(raw.decode(errors="replace").rstrip("\n"))


async def start_sidecar(
    config_yaml: str | None, tmp: Path, *, env: dict[str, str] | None = None, startup: float = 20.0,
    args: tuple[str, ...] = (), script: bool = False,
) -> Sidecar:
    """Write the config (None: the embedded default), start on free ports, wait for "listening".

    ``script``: run the installed ``sidecar`` console script instead of ``python -m sidecar``.
    """
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "sidecar"]
    argv = [*command, *args, "--port", "0", "--ops-port", "0"]
    if config_yaml is not None:
        path = tmp / "sidecar.yaml"
        path.write_text(config_yaml)
        argv += ["--config", str(path)]
    # No sidecar settings and no real provider keys leak in from the machine running the tests.
    full_env = clean_environ(env)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full_env,
        limit=1 << 20,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout: list[str] = []
    stderr: list[str] = []
    err_pump = asyncio.ensure_future(_pump(proc.stderr, stderr))
    try:
        async with asyncio.timeout(startup):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    await proc.wait()
                    await err_pump
                    raise RuntimeError("sidecar exited before listening: " + "\n".join(stderr)[-2000:])
                stdout.append(raw.decode(errors="replace").rstrip("\n"))
                line = json.loads(raw)
                if line.get("event") == "listening":
                    break
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        err_pump.cancel()
        raise
    sc = Sidecar(proc, int(line["proxy"].rsplit(":", 1)[1]), int(line["ops"].rsplit(":", 1)[1]),
                 stdout, stderr)
    sc._pumps = [asyncio.ensure_future(_pump(proc.stdout, stdout)), err_pump]
    return sc
