"""One log stream: the sidecar's own lines and the standard library's (aiohttp, asyncio) as JSON."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from sidecar.logs import configure_logging, get_logger

from .support.polling import eventually
from .support.process import Sidecar, start_sidecar

QUIET = "server: {drain_time: 0s, shutdown_grace: 1s}\nproviders: {}\n"
BAD_HEADER = b"GET /health/live HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # HTTPS to the HTTP port: no method


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging's process-wide changes after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_stdlib_records_are_json_lines_in_the_same_stream(restore_logging: None) -> None:
    """An aiohttp.server error with a traceback is one JSON line beside the sidecar's own line."""
    out = io.StringIO()
    configure_logging("json", stream=out)
    get_logger("server").info("listening", proxy="127.0.0.1:1")
    try:
        raise ValueError("bad head")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
    own, foreign = (json.loads(line) for line in out.getvalue().splitlines())
    assert (own["event"], own["level"], own["component"]) == ("listening", "info", "server")
    assert foreign["event"] == "Error handling request from 127.0.0.1"
    assert (foreign["level"], foreign["logger"]) == ("error", "aiohttp.server")
    assert "ValueError: bad head" in foreign["exception"] and foreign["timestamp"]


@pytest.mark.parametrize(("level", "expected"), [
    ("debug", ["own-debug", "own-info", "own-warning", "aiohttp-debug", "asyncio-warning"]),
    ("info", ["own-info", "own-warning", "asyncio-warning"]),
    ("warning", ["own-warning", "asyncio-warning"]),
    ("error", []),
])
def test_log_level_filters_both_kinds_of_line(restore_logging: None, level: str,
                                              expected: list[str]) -> None:
    """--log-level is the lowest level logged, for structlog and stdlib records alike."""
    out = io.StringIO()
    configure_logging("json", stream=out, level=level)  # type: ignore[arg-type]
    log = get_logger("t")
    log.debug("own-debug")
    log.info("own-info")
    log.warning("own-warning")
    logging.getLogger("aiohttp.server").debug("aiohttp-debug")
    logging.getLogger("asyncio").warning("asyncio-warning")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == expected


async def _send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()  # aiohttp answers 400 and closes
    writer.close()
    await writer.wait_closed()
    return answer


async def _wait_for(sc: Sidecar, logger: str) -> None:
    await eventually(lambda: any(line.get("logger") == logger for line in sc.lines()), timeout=10,
                     interval=0.02, what=f"a {logger} line in the sidecar's output")


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_a_real_sidecar_logs_aiohttp_records_as_json_only(tmp_path: Path, level: str) -> None:
    """Malformed requests make aiohttp log; every line of stdout parses and stderr stays empty."""
    sc = await start_sidecar(QUIET, tmp_path, script=True, args=("serve", "--log-level", level))
    try:
        assert (await _send_raw(sc.proxy_port, TLS_HELLO)).startswith(b"HTTP/1.")
        assert (await _send_raw(sc.proxy_port, BAD_HEADER)).startswith(b"HTTP/1.")
        await _wait_for(sc, "aiohttp.server")
        assert await sc.stop(wait=15) == 0
    finally:
        await sc.kill()
    lines = [json.loads(raw) for raw in sc.stdout]  # raises on any line that is not JSON
    assert sc.stderr == []
    aiohttp_lines = [(line["level"], line["event"]) for line in lines
                     if line.get("logger") == "aiohttp.server"]
    bad_header = ("error", "Error handling request from 127.0.0.1")
    tls = ("debug", "Error handling request from 127.0.0.1")
    assert aiohttp_lines == ([tls, bad_header] if level == "debug" else [bad_header])
    error = next(line for line in lines if line.get("level") == "error")
    assert "BadHttpMessage" in error["exception"]
