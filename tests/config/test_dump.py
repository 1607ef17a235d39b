"""The effective configuration dump: no secret in it, units written out, and it loads back equal."""

from __future__ import annotations

from typing import Any

import yaml

from sidecar.config import SidecarConfig
from sidecar.config.load import dump_effective, parse_config

FAKE_KEY = "sk-FAKE-5ec2e7-do-not-leak"


def provider(**block: Any) -> dict[str, Any]:
    """A config with one proxy provider ``p`` whose block is ``block``."""
    return {"providers": {"p": {"upstream": "https://api.example.com", **block}}}


def secret_config() -> SidecarConfig:
    """Two auth entries on one secret, a health check, a route and a download provider."""
    data = provider(auth=[{"header": "apikey", "env": "KEY"},
                          {"header": "Authorization", "prefix": "Bearer ", "env": "KEY"}],
                    health={"path": "/v1/me"},
                    routes=[{"name": "job", "method": "POST", "path": "/jobs/{id}",
                             "retry": {"max_attempts": 1}, "idempotent": False}])
    data["providers"]["dl"] = {"kind": "download", "allowed_hosts": ["*.x.com"]}
    return parse_config(data, {"KEY": FAKE_KEY})


def test_dump_never_contains_a_secret() -> None:
    """The dump shows header, prefix and env, and <redacted> instead of the key."""
    text = dump_effective(secret_config())
    assert FAKE_KEY not in text
    assert "<redacted>" in text and "env: KEY" in text


def test_dump_round_trips() -> None:
    """Loading the dump with the same environment gives an equal configuration."""
    config = secret_config()
    again = parse_config(yaml.safe_load(dump_effective(config)), {"KEY": FAKE_KEY})
    assert again == config
    assert again.providers["p"].auth[0].value == FAKE_KEY


def test_dump_writes_durations_and_sizes_with_units() -> None:
    """Durations read as '30s', sizes as '100MiB'."""
    provider_dump = yaml.safe_load(dump_effective(secret_config()))["providers"]["p"]
    assert provider_dump["breaker"]["recovery_timeout"] == "30s"
    assert provider_dump["max_request_body"] == "100MiB"
