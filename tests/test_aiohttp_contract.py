"""What the sidecar takes from aiohttp's internals still holds on the installed aiohttp.

Two modules reach into aiohttp where it has no public API: ``sidecar.upstream.aiohttp_client_compat``
(the lean pool's response protocol, the download session's silent re-send) and
``sidecar.web.aiohttp_server_compat`` (the slow-head timeout's protocol and runner). Each lists the
names it relies on in ``PRIVATE_API``. These tests fail naming the name when an aiohttp release
removes or reshapes one, check that the two modules touch nothing they do not list and that no
other module touches aiohttp's internals at all, and check the behaviour the names are used for
against real connections. ``make test-oldest`` runs them on the oldest aiohttp that setup.cfg allows.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import sidecar
from sidecar.upstream import aiohttp_client_compat as client_compat
from sidecar.upstream.aiohttp_client_compat import PrivateName
from sidecar.web import aiohttp_server_compat as server_compat

SIDECAR = Path(sidecar.__file__).resolve().parent
COMPAT = {
    SIDECAR / "upstream" / "aiohttp_client_compat.py": client_compat.PRIVATE_API,
    SIDECAR / "web" / "aiohttp_server_compat.py": server_compat.PRIVATE_API,
}
ALL_NAMES = client_compat.PRIVATE_API + server_compat.PRIVATE_API
# aiohttp's documented import paths; everything else under aiohttp is internal.
PUBLIC_AIOHTTP = frozenset({"aiohttp", "aiohttp.web", "aiohttp.abc"})
WRAPPED = ("aiohttp", "multidict", "yarl")


def _resolve(dotted: str) -> Any:
    """A module, or a class inside one, by its dotted name."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


async def _instance(owner: str) -> Any:
    """A fresh instance of ``owner``, to look for attributes that only instances carry."""
    loop = asyncio.get_running_loop()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    if owner == "aiohttp.client_proto.ResponseHandler":
        return client_compat.new_protocol(loop)
    if owner == "aiohttp.http_exceptions.HttpProcessingError":
        return client_compat.InvalidResponse(message="x")
    if owner == "aiohttp.ClientSession":
        return aiohttp.ClientSession()
    if owner == "aiohttp.web.Server":
        return web.Server(handler)
    if owner == "aiohttp.web.RequestHandler":
        return web.RequestHandler(web.Server(handler), loop=loop)
    raise AssertionError(f"no way to build a {owner} to check its attributes: add one here")


def _label(use: PrivateName) -> str:
    return f"{use.owner}.{use.name}"


@pytest.mark.parametrize("use", ALL_NAMES, ids=_label)
async def test_every_private_name_is_still_there_and_of_its_kind(use: PrivateName) -> None:
    """Each listed name exists on the installed aiohttp as the kind listed, taking the keywords passed."""
    where = f"aiohttp {aiohttp.__version__}: {_label(use)}"
    try:
        owner = _resolve(use.owner)
    except (ImportError, AttributeError):
        pytest.fail(f"aiohttp {aiohttp.__version__}: {use.owner} is gone (needed for {use.name})")
    if use.kind == "attribute":
        instance = await _instance(use.owner)
        try:
            assert hasattr(instance, use.name), f"{where}: instances no longer have this attribute"
            attrs = getattr(type(instance), "ATTRS", None)
            if attrs is not None:  # ClientSession warns on (and may one day refuse) other names
                assert use.name in attrs, f"{where}: no longer one of {type(instance).__name__}.ATTRS"
        finally:
            if isinstance(instance, aiohttp.ClientSession):
                await instance.close()
        return
    assert hasattr(owner, use.name), f"{where} is gone"
    value = inspect.getattr_static(owner, use.name)
    if use.kind == "class":
        assert inspect.isclass(value), f"{where} is no longer a class"
    elif use.kind == "property":
        assert isinstance(value, property), f"{where} is no longer a property"
        if use.name == "read_timeout":  # the pool sets it
            assert value.fset is not None, f"{where} can no longer be set"
    elif use.kind == "coroutine":
        assert inspect.iscoroutinefunction(value), f"{where} is no longer a coroutine function"
    elif use.kind == "method":
        assert inspect.isfunction(value) and not inspect.iscoroutinefunction(value), (
            f"{where} is no longer a plain method"
        )
    elif use.kind == "module attribute":
        assert inspect.ismodule(owner), f"{use.owner} is no longer a module"
    else:
        raise AssertionError(f"unknown kind {use.kind!r}")
    if use.params:
        target = value.__init__ if inspect.isclass(value) else value
        params = inspect.signature(target).parameters
        missing = [p for p in use.params if p not in params]
        assert not missing, f"{where} no longer takes {', '.join(missing)}"


def _private_attributes(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every ``x._name`` in a module (dunders aside), with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            yield node.attr, node.lineno


def _own_attributes(tree: ast.AST) -> set[str]:
    """The ``self._name`` a module assigns and the methods its classes define: their own, not
    someone else's."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            own.update(item.name for item in node.body
                       if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self"):
                own.add(target.attr)
    return own


def _imports(tree: ast.AST) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every absolute import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield node.module, alias.name, node.lineno


@pytest.mark.parametrize("path", list(COMPAT), ids=lambda p: p.name)
def test_compat_modules_touch_only_what_they_list(path: Path) -> None:
    """Every private attribute and internal import in a compat module is in its PRIVATE_API."""
    declared = COMPAT[path]
    names = {use.name for use in declared}
    pairs = {(use.owner, use.name) for use in declared}
    tree = ast.parse(path.read_text())
    unlisted = [f"line {line}: .{attr}" for attr, line in _private_attributes(tree) if attr not in names]
    for module, name, line in _imports(tree):
        internal = module.startswith("aiohttp.") and module not in PUBLIC_AIOHTTP
        if internal and name is not None and (module, name) not in pairs:
            unlisted.append(f"line {line}: from {module} import {name}")
    assert unlisted == [], f"{path.name} uses aiohttp internals not in its PRIVATE_API: {unlisted}"


def test_no_other_module_touches_aiohttp_internals() -> None:
    """Outside the two compat modules, nothing imports aiohttp's internal modules, imports an
    underscored name from aiohttp, multidict or yarl, or uses a listed private attribute."""
    private = {use.name for use in ALL_NAMES if use.name.startswith("_") and not use.name.startswith("__")}
    found = []
    for path in sorted(SIDECAR.rglob("*.py")):
        if path in COMPAT:
            continue
        tree = ast.parse(path.read_text())
        rel = path.relative_to(SIDECAR.parent)
        for module, name, line in _imports(tree):
            top = module.partition(".")[0]
            if top == "aiohttp" and module not in PUBLIC_AIOHTTP:
                found.append(f"{rel}:{line} imports {module}")
            if top in WRAPPED and name is not None and name.startswith("_"):
                found.append(f"{rel}:{line} imports {module}.{name}")
        own = _own_attributes(tree)
        for attr, line in _private_attributes(tree):
            if attr in private and attr not in own:
                found.append(f"{rel}:{line} uses .{attr}")
    assert found == [], f"aiohttp internals outside the compat modules: {found}"


async def test_prepare_response_gives_the_protocol_a_parser() -> None:
    """A new protocol has no parser; prepare_response sets one up (parser_ready sees it)."""
    proto = client_compat.new_protocol(asyncio.get_running_loop())
    assert not client_compat.parser_ready(proto)
    client_compat.prepare_response(proto, head=False, read_bufsize=2**16)
    assert client_compat.parser_ready(proto)


def test_the_shared_tls_context_verifies() -> None:
    """aiohttp's verifying context is found, and it checks certificates and host names."""
    ctx = client_compat.shared_verified_context()
    assert ctx is not None, f"aiohttp {aiohttp.__version__}: no verifying context to share"


class _DropsSecondRequest:
    """A raw HTTP/1.1 server: on the first connection it answers one request, keeps the connection
    alive, then reads the second request and closes without answering; later connections answer."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        try:
            for n in range(2):
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                if first and n == 1:
                    return  # the dropped keep-alive connection: the request went out, no answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def dropping() -> AsyncIterator[_DropsSecondRequest]:
    server = _DropsSecondRequest()
    await server.start()
    yield server
    await server.close()


async def _two_gets(server: _DropsSecondRequest, *, silent_resend: bool) -> int:
    """GET twice on one keep-alive connection; the second's status, or 0 when it failed."""
    async with aiohttp.ClientSession() as session:
        if not silent_resend:
            client_compat.disable_silent_resend(session)
        url = f"http://127.0.0.1:{server.port}/x"
        async with session.get(url) as resp:
            assert await resp.read() == b"ok"
        try:
            async with session.get(url) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            return 0


async def test_aiohttp_resends_silently_by_default(dropping: _DropsSecondRequest) -> None:
    """The control: left alone, aiohttp sends the dropped GET again on a new connection, unseen."""
    assert await _two_gets(dropping, silent_resend=True) == 200
    assert (dropping.requests, dropping.connections) == (3, 2)


async def test_disable_silent_resend_really_stops_the_resend(dropping: _DropsSecondRequest) -> None:
    """With _retry_connection off, the dropped GET fails once and reaches the server only once."""
    status = await _two_gets(dropping, silent_resend=False)
    assert (status, dropping.requests, dropping.connections) == (0, 2, 1), (
        f"aiohttp {aiohttp.__version__} re-sent the request: _retry_connection no longer disables it"
    )


async def test_drain_waits_only_under_back_pressure(dropping: _DropsSecondRequest) -> None:
    """drain on a connected protocol returns; on a closed one it raises a connection error."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: client_compat.new_protocol(loop), "127.0.0.1",
                                            dropping.port)
    assert isinstance(proto, client_compat.UpstreamProtocol)
    await client_compat.drain(proto)
    proto.close()
    end = loop.time() + 5
    while proto.transport is not None:  # connection_lost runs on a later loop iteration
        assert loop.time() < end, "the protocol never saw its connection close"
        await asyncio.sleep(0.01)
    with pytest.raises(aiohttp.ClientConnectionError):
        await client_compat.drain(proto)


async def test_request_handler_counts_and_busy() -> None:
    """requests_parsed counts the heads a connection parsed; busy is true while one is handled."""
    seen: list[tuple[int, bool]] = []
    protocols: list[web.RequestHandler] = []
    release = asyncio.Event()

    def protocol(manager: web.Server, **kwargs: Any) -> web.RequestHandler:
        handler = web.RequestHandler(manager, **kwargs)
        protocols.append(handler)
        return handler

    async def handle(request: web.Request) -> web.Response:
        seen.append((server_compat.requests_parsed(protocols[0]), server_compat.busy(protocols[0])))
        await release.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = server_compat.ProtocolRunner(app, protocol=protocol, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while not seen:
            assert loop.time() < end, "the request never reached the handler"
            await asyncio.sleep(0.01)
        release.set()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert seen == [(1, True)]
        writer.close()
    finally:
        await runner.cleanup()
