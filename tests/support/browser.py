"""Headless Chromium for the status page: dump the rendered DOM, take a screenshot, read the cards.

Chromium is a Debian package that ``scripts/fetch-tools.sh`` installs; a machine without it fails
these tests (they are never skipped). Each run gets a fresh profile and its own process group, so
a run that overstays its deadline is killed with every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

# Quiet and offline: no first-run UI, no background requests, no component or sync downloads.
BASE_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)


def chromium() -> str:
    """The chromium binary; its absence is an error (``make tools`` installs it), not a skip."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed: run `make tools` (scripts/fetch-tools.sh)")
    return path


RUN_LIMIT = 45.0  # seconds for one chromium run, start-up included, on a loaded machine


async def run_chromium(*args: str) -> tuple[int, str, str]:
    """Run chromium once with a throw-away profile; (exit code, stdout, stderr)."""
    with tempfile.TemporaryDirectory(prefix="sidecar-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium(), *BASE_FLAGS, f"--user-data-dir={profile}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: renderer and zygote die with it
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), RUN_LIMIT)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def dump_dom(url: str, *, budget_ms: int = 5000) -> str:
    """The DOM after the page's scripts ran for ``budget_ms`` of virtual time."""
    code, out, err = await run_chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
    if code != 0 or "</html>" not in out:
        raise RuntimeError(f"chromium --dump-dom exited {code}: {err[-2000:]}")
    return out


async def screenshot(url: str, path: Path, *, size: tuple[int, int] = (1280, 900),
                     budget_ms: int = 5000) -> None:
    code, _, err = await run_chromium(
        f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}",
        f"--screenshot={path}", url,
    )
    if code != 0 or not await asyncio.to_thread(path.is_file):
        raise RuntimeError(f"chromium --screenshot exited {code}: {err[-2000:]}")


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parts: list[str | Element] = field(default_factory=list)  # text and elements, in order

    @property
    def children(self) -> list[Element]:
        return [p for p in self.parts if isinstance(p, Element)]

    def all_text(self) -> str:
        return "".join(p if isinstance(p, str) else p.all_text() for p in self.parts)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants with this tag (any when None) and these attribute values (``data_x`` is ``data-x``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and all(
                child.attrs.get(k) == v for k, v in wanted.items()
            ):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]


_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Element(tag, {k: v or "" for k, v in attrs})
        self._stack[-1].parts.append(node)
        if tag not in _VOID:
            self._stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, 0, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].parts.append(data)


def parse(html: str) -> Element:
    """Chromium's serialised DOM as a small tree (text is unescaped, as the browser shows it)."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root
