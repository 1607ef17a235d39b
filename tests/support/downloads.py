"""The file-download provider configured for loopback fake file servers, and its request paths."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

from sidecar.config import DownloadConfig, SidecarConfig

from .configs import provider, sidecar_config

__all__ = ["NAME", "MiB", "download_config", "path_for"]

MiB = 1024 * 1024
NAME = "file-download"


def download_config(**overrides: Any) -> SidecarConfig:
    """A download provider for loopback fakes: http allowed, private networks open."""
    dl = DownloadConfig(allowed_hosts=("127.0.0.1",), allowed_schemes=("http",),
                        allow_private_networks=True, max_download_size=MiB)
    dl = dataclasses.replace(dl, **overrides)
    return sidecar_config(provider(NAME, "", kind="download", download=dl))


def path_for(url: str) -> str:
    """The sidecar path that downloads ``url``."""
    return f"/{NAME}?url={quote(url, safe='')}"
