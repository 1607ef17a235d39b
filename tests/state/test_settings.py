"""Where the embedded ledger lives, which instance id a sidecar takes, and which store it opens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sidecar.state as state
from sidecar.state import (
    LedgerBackend,
    LedgerSettings,
    MemoryStore,
    OnUnavailable,
    RedisStore,
    SqliteStore,
    instance_id_from,
    ledger_path,
    open_store,
)
from sidecar.state.settings import state_dir


def test_defaults_match_the_contract() -> None:
    """sqlite, 24 h, 1 MiB bodies, "sidecar:" prefix, forward when unavailable."""
    s = LedgerSettings()
    assert (s.backend, s.path, s.url, s.prefix) == (LedgerBackend.SQLITE, None, None, "sidecar:")
    assert (s.ttl, s.max_stored_body, s.max_entries) == (86400.0, 1024 * 1024, None)
    assert s.on_unavailable is OnUnavailable.FORWARD


def test_the_state_dir_comes_from_the_environment_first(tmp_path: Path) -> None:
    """SIDECAR_STATE_DIR wins over everything."""
    assert state_dir({"SIDECAR_STATE_DIR": str(tmp_path / "s")}) == tmp_path / "s"


def test_the_default_dir_is_used_when_writable(tmp_path: Path) -> None:
    """/var/lib/sidecar (here a stand-in) when it exists and is writable."""
    assert state_dir({}, default=tmp_path, tmp=tmp_path / "tmp") == tmp_path


def test_a_missing_default_dir_falls_back_to_a_per_user_tmp_dir(tmp_path: Path) -> None:
    """No /var/lib/sidecar: <tmp>/sidecar-<uid>."""
    got = state_dir({}, default=tmp_path / "absent", tmp=tmp_path)
    assert got == tmp_path / f"sidecar-{os.getuid()}"


def test_the_ledger_file_is_path_or_a_file_in_the_state_dir(tmp_path: Path) -> None:
    """ledger.path names the file; else ledger.sqlite3 in the state dir."""
    env = {"SIDECAR_STATE_DIR": str(tmp_path)}
    assert ledger_path(LedgerSettings(), env) == tmp_path / "ledger.sqlite3"
    assert ledger_path(LedgerSettings(path="/data/l.db"), env) == Path("/data/l.db")


def test_the_instance_id_prefers_the_explicit_variable_then_the_pod_name() -> None:
    """SIDECAR_INSTANCE_ID, else HOSTNAME (the pod name), else the host name."""
    assert instance_id_from({"SIDECAR_INSTANCE_ID": "a", "HOSTNAME": "b"}) == "a"
    assert instance_id_from({"HOSTNAME": "bot-7d9f-x2"}) == "bot-7d9f-x2"
    assert instance_id_from({})


def test_open_store_builds_the_configured_backend(tmp_path: Path) -> None:
    """Each backend value gives its store, with the settings' ttl, cap, prefix and place."""
    env = {"SIDECAR_STATE_DIR": str(tmp_path)}
    sqlite = open_store(LedgerSettings(ttl=60, max_entries=7), instance_id="p", environ=env)
    assert isinstance(sqlite, SqliteStore)
    assert (sqlite.path, sqlite.ttl, sqlite.max_entries, sqlite.instance_id) == (
        tmp_path / "ledger.sqlite3", 60, 7, "p"
    )
    memory = open_store(LedgerSettings(backend=LedgerBackend.MEMORY), instance_id="p", environ=env)
    assert isinstance(memory, MemoryStore)
    redis = open_store(
        LedgerSettings(backend=LedgerBackend.REDIS, url="rediss://r:6380/0", prefix="bot:"),
        instance_id="p", environ=env,
    )
    assert isinstance(redis, RedisStore)
    assert (redis.url, redis.prefix) == ("rediss://r:6380/0", "bot:")


def test_without_a_cap_each_backend_keeps_its_default(tmp_path: Path) -> None:
    """100,000 records on disk and in Redis; 5,000 in memory, where each costs about 1 KiB of RAM."""
    env = {"SIDECAR_STATE_DIR": str(tmp_path)}
    stores = {
        backend: open_store(
            LedgerSettings(backend=backend, url="redis://r:6379/0"), instance_id="p", environ=env
        )
        for backend in LedgerBackend
    }
    caps = {backend: store.max_entries for backend, store in stores.items()
            if isinstance(store, MemoryStore | SqliteStore | RedisStore)}
    assert caps == {LedgerBackend.SQLITE: 100_000, LedgerBackend.REDIS: 100_000,
                    LedgerBackend.MEMORY: 5_000}
    memory = open_store(LedgerSettings(backend=LedgerBackend.MEMORY, max_entries=9), instance_id="p",
                        environ=env)
    assert isinstance(memory, MemoryStore) and memory.max_entries == 9


def test_redis_without_a_url_names_the_key() -> None:
    """backend redis and no url: the error names ledger.url."""
    with pytest.raises(ValueError, match=r"ledger\.url"):
        open_store(LedgerSettings(backend=LedgerBackend.REDIS), instance_id="p", environ={})


def test_the_public_names_are_all_exported() -> None:
    """Every name in sidecar.state.__all__ exists, and every public class or function is listed."""
    for name in state.__all__:
        assert hasattr(state, name), name
    public = {n for n, v in vars(state).items() if not n.startswith("_") and not isinstance(v, type(state))}
    assert public == set(state.__all__)
