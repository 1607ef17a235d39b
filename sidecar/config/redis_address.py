"""Where a Redis is and how to reach it, read from a ``redis://`` or ``rediss://`` URL.

``redis://[[user]:password@]host[:port][/db]``; ``rediss://`` is the same over TLS, verifying the
server against the system's CAs unless ``ssl_*`` query arguments say otherwise (their names are
redis-py's, so URLs written for it keep working). An unknown query argument is an error rather
than ignored: a misspelt ``ssl_ca_certs`` would otherwise fall back to the system CAs unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["TLS_ARGUMENTS", "RedisAddress", "parse_redis_url"]

TLS_ARGUMENTS = (
    "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_cert_reqs",
    "ssl_check_hostname",
)
_CERT_REQS = ("none", "optional", "required")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_certs: str | None = None
    ca_path: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = True

    def __repr__(self) -> str:  # never the password
        scheme = "rediss" if self.tls else "redis"
        return f"RedisAddress({scheme}://{self.host}:{self.port}/{self.db})"


def parse_redis_url(url: str) -> RedisAddress:
    """The address in ``url``; ``ValueError`` says what is wrong with it."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or 6379
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("must be a redis:// or rediss:// URL like redis://redis:6379/0")
    db_text = parts.path.lstrip("/")
    if db_text and not db_text.isdigit():
        raise ValueError(f"the database after the port must be a number, got {db_text!r}")
    options: dict[str, object] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "db" and value.isdigit():
            db_text = value
        elif name not in TLS_ARGUMENTS:
            raise ValueError(f"unknown query argument {name!r} (known: db, {', '.join(TLS_ARGUMENTS)})")
        elif name == "ssl_cert_reqs":
            if value.lower() not in _CERT_REQS:
                raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, got {value!r}")
            options["cert_reqs"] = value.lower()
        elif name == "ssl_check_hostname":
            if value.lower() not in _BOOLEANS:
                raise ValueError(f"ssl_check_hostname must be true or false, got {value!r}")
            options["check_hostname"] = _BOOLEANS[value.lower()]
        else:
            field = {"ssl_password": "key_password"}.get(name, name.removeprefix("ssl_"))
            options[field] = value
    return RedisAddress(
        host=parts.hostname, port=port, db=int(db_text or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "rediss", **options,  # type: ignore[arg-type]
    )
