"""What only the Redis ledger has: key layout and TTLs, prefixes, real expiry, TLS from the URL."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from sidecar.state import RedisStore, StoredResponse, StoreUnavailable
from sidecar.state.redis_codec import member, split_member
from sidecar.state.redis_store import redis_client
from sidecar.state.resp import tls_context
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer

FP = "f" * 64
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=255)


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the test server, to look at what the store wrote."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@given(PRINTABLE, PRINTABLE)
def test_member_escaping_is_reversible_and_free_of_separators(provider: str, key: str) -> None:
    """(provider, key) -> one Redis key part with no ':', '{', '}', '*' or space, and back."""
    m = member(provider, key)
    assert split_member(m) == (provider, key)
    assert m.count("/") == 1
    assert not set(m) & set(":{}*? []")


async def test_every_key_is_namespaced_and_expires(redis_server: RedisServer, raw: aioredis.Redis) -> None:
    """All keys the store writes start with its prefix and carry a TTL no longer than the record's."""
    store = RedisStore(redis_server.url, instance_id="pod-a", prefix="ns-ttl:", ttl=600)
    await store.start()
    claim = await store.claim("replicate", "a:b{c}", FP)
    await store.complete("replicate", "a:b{c}", claim.record.claim_id, StoredResponse(200, (), b"x"))
    await store.claim("bfl", "other", FP, ttl=30)
    keys = sorted([k.decode() async for k in raw.scan_iter(match="ns-ttl:*")])
    assert keys == ["ns-ttl:claims", "ns-ttl:expiry", "ns-ttl:r:bfl/other", "ns-ttl:r:replicate/a%3Ab%7Bc%7D",
                    "ns-ttl:seq"]
    ttls = {k: await raw.pttl(k) for k in keys}
    assert all(0 < t <= 600_000 for t in ttls.values()), ttls
    assert ttls["ns-ttl:r:bfl/other"] <= 30_000
    await store.close()


async def test_prefixes_keep_two_ledgers_apart(redis_server: RedisServer) -> None:
    """Two stores on one Redis with different prefixes never see each other's keys."""
    one = RedisStore(redis_server.url, instance_id="pod-a", prefix="bot-one:")
    two = RedisStore(redis_server.url, instance_id="pod-a", prefix="bot-two:")
    for store in (one, two):
        await store.start()
    assert (await one.claim("replicate", "k", FP)).claimed
    assert (await two.claim("replicate", "k", FP)).claimed
    assert [r.key for r in await two.list()] == ["k"]
    await one.release("replicate", "k")
    assert await two.get("replicate", "k") is not None
    for store in (one, two):
        await store.close()


async def test_redis_drops_an_expired_record_on_its_own(
    redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    """With the real clock, a record with a 300 ms ttl is gone from Redis itself shortly after."""
    store = RedisStore(redis_server.url, instance_id="pod-a", prefix="ns-real:", ttl=0.3)
    await store.start()
    await store.claim("replicate", "short", FP)
    assert await raw.exists("ns-real:r:replicate/short") == 1
    await eventually(lambda: raw.exists("ns-real:r:replicate/short"), until=lambda n: n == 0,
                     timeout=10, interval=0.05, what="Redis dropping the expired record")
    assert await store.get("replicate", "short") is None
    assert (await store.claim("replicate", "short", FP)).claimed
    await store.close()


def test_rediss_urls_configure_tls(certificates: dict[str, Path]) -> None:
    """rediss:// builds a TLS context that verifies the server, and ssl_* query arguments pass through."""
    tls = redis_client(f"rediss://:pw@redis.example:6380/2?ssl_ca_certs={certificates['ca']}", op_timeout=1,
                       connect_timeout=0.5)
    a = tls.address
    assert (a.host, a.port, a.db, a.username, a.password) == ("redis.example", 6380, 2, None, "pw")
    assert a.tls
    assert a.ca_certs == str(certificates["ca"])
    assert (tls.read_timeout, tls.connect_timeout) == (1, 0.5)
    context = tls_context(a)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert "pw" not in repr(a)
    plain = redis_client("redis://127.0.0.1:6379/0", op_timeout=1, connect_timeout=0.5)
    assert not plain.address.tls


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    files = {"ca": d / "ca.pem", "ca_key": d / "ca.key", "cert": d / "server.pem", "key": d / "server.key"}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(files["ca_key"]), "-out", str(files["ca"]))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(files["key"]),
            "-out", str(d / "server.csr"))
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(files["ca"]), "-CAkey",
            str(files["ca_key"]), "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"),
            "-out", str(files["cert"]))
    return files


@pytest.fixture
async def tls_redis(tmp_path: Path, certificates: dict[str, Path]) -> AsyncIterator[RedisServer]:
    """A redis-server that speaks only TLS, with a certificate for 127.0.0.1 from the test CA."""
    server = await RedisServer(tmp_path / "redis-tls", tls=certificates).start()
    yield server
    server.kill()


async def test_a_real_tls_redis_works_through_rediss(tls_redis: RedisServer) -> None:
    """Against redis-server speaking only TLS, a rediss:// URL with the CA claims; plain redis:// can't."""
    store = RedisStore(tls_redis.url, instance_id="pod-a", prefix="tls:")
    await store.start()
    await store.ping()
    assert (await store.claim("replicate", "k", FP)).claimed
    await store.close()
    plain = RedisStore(f"redis://127.0.0.1:{tls_redis.port}/0", instance_id="pod-a", op_timeout=0.5)
    await plain.start()
    with pytest.raises(StoreUnavailable):
        await plain.ping()
    await plain.close()
