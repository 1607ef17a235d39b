"""Every use of aiohttp's client internals, in one place, behind a small typed API.

The lean pool (``h1pool``) reads answers with aiohttp's own response protocol, ``ResponseHandler``,
for its C parser, flow control, read timeout and exception types; the download session needs the
silent re-send of idempotent requests turned off. aiohttp documents neither, so this module is the
only one that reaches into aiohttp for them, and ``PRIVATE_API`` lists each name it relies on, with
what kind of thing it must be. ``tests/test_aiohttp_contract.py`` checks that list against the
installed aiohttp (and that this module touches nothing it does not list), so an aiohttp release
that renames or reshapes one fails there, naming it, rather than somewhere in a proxied request.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Literal, NamedTuple

import aiohttp
import aiohttp.connector
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError

__all__ = [
    "PRIVATE_API",
    "InvalidResponse",
    "PrivateName",
    "UpstreamProtocol",
    "disable_silent_resend",
    "drain",
    "new_protocol",
    "parser_ready",
    "prepare_response",
    "shared_verified_context",
    "stream_of",
]

Kind = Literal["class", "method", "coroutine", "property", "attribute", "module attribute"]


class PrivateName(NamedTuple):
    """One undocumented aiohttp name this code relies on: where it lives, what it must be, and the
    keyword parameters the code passes it (a method or a class's constructor)."""

    owner: str  # dotted: a module, or a class inside one
    name: str
    kind: Kind
    params: tuple[str, ...] = ()


# The protocol that parses one connection's responses (aiohttp.client_proto.ResponseHandler).
UpstreamProtocol = ResponseHandler
# A malformed status line or header from the upstream (aiohttp.http_exceptions.HttpProcessingError).
InvalidResponse = HttpProcessingError

_PROTO = "aiohttp.client_proto.ResponseHandler"

PRIVATE_API: tuple[PrivateName, ...] = (
    PrivateName("aiohttp.client_proto", "ResponseHandler", "class", ("loop",)),
    PrivateName(_PROTO, "set_response_params", "method",
                ("skip_payload", "read_until_eof", "auto_decompress", "read_timeout", "read_bufsize")),
    PrivateName(_PROTO, "_parser", "attribute"),
    PrivateName(_PROTO, "_drain_helper", "coroutine"),
    # The rest of ResponseHandler is not underscored, but the class is internal all the same.
    PrivateName(_PROTO, "read", "coroutine"),
    PrivateName(_PROTO, "read_timeout", "property"),
    PrivateName(_PROTO, "start_timeout", "method"),
    PrivateName(_PROTO, "should_close", "property"),
    PrivateName(_PROTO, "is_connected", "method"),
    PrivateName(_PROTO, "set_exception", "method"),
    PrivateName(_PROTO, "close", "method"),
    PrivateName(_PROTO, "transport", "attribute"),
    PrivateName("aiohttp.http_exceptions", "HttpProcessingError", "class"),
    PrivateName("aiohttp.http_exceptions.HttpProcessingError", "message", "attribute"),
    PrivateName("aiohttp.connector", "_SSL_CONTEXT_VERIFIED", "module attribute"),
    PrivateName("aiohttp.ClientSession", "_retry_connection", "attribute"),
    PrivateName("aiohttp.base_protocol", "BaseProtocol", "class", ("loop",)),
)


def stream_of(body: bytes, limit: int) -> aiohttp.StreamReader:
    """A finished ``StreamReader`` holding ``body``: an answer's bytes put back after a peek."""
    loop = asyncio.get_running_loop()
    stream = aiohttp.StreamReader(BaseProtocol(loop), limit, loop=loop)
    stream.feed_data(body)
    stream.feed_eof()
    return stream


def new_protocol(loop: asyncio.AbstractEventLoop) -> ResponseHandler:
    """A protocol for ``loop.create_connection``: it parses the answers on one connection."""
    return ResponseHandler(loop)


def prepare_response(proto: ResponseHandler, *, head: bool, read_bufsize: int) -> None:
    """Set the protocol up for the next answer: a HEAD answer has no body; a body with neither
    length nor chunking ends at close; bytes pass through undecoded; no sock_read timer yet."""
    proto.set_response_params(
        skip_payload=head,
        read_until_eof=True,
        auto_decompress=False,
        read_timeout=None,
        read_bufsize=read_bufsize,
    )


def parser_ready(proto: ResponseHandler) -> bool:
    """Whether the protocol has a response parser (it drops it when an answer ends the connection)."""
    return proto._parser is not None


async def drain(proto: ResponseHandler) -> None:
    """Wait while the transport's write buffer is over its high-water mark (back-pressure)."""
    await proto._drain_helper()


def shared_verified_context() -> ssl.SSLContext | None:
    """The verifying TLS context aiohttp made at import (default CA store, ALPN http/1.1), or None
    when it is not there or does not verify host names and certificates."""
    ctx = getattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", None)
    if isinstance(ctx, ssl.SSLContext) and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED:
        return ctx
    return None


def disable_silent_resend(session: aiohttp.ClientSession) -> None:
    """No silent re-send of an idempotent request whose reused keep-alive connection dropped:
    aiohttp retries once by itself, unseen by the attempt loop that counts and retries every send.
    aiohttp has no public switch for it."""
    session._retry_connection = False
