"""The embedded default configuration: the seven services of the original system."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from sidecar.config import SidecarConfig
from sidecar.config.load import dump_effective, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

# The original system's breaker settings per provider:
# failure_threshold, recovery_timeout, monitoring_period, success_threshold
ORIGINAL_THRESHOLDS = {
    "replicate": (5, 30.0, 60.0, 3),
    "supabase": (3, 10.0, 30.0, 2),
    "elevenlabs": (4, 20.0, 45.0, 2),
    "synclabs": (4, 25.0, 50.0, 2),
    "huggingface": (6, 45.0, 90.0, 3),
    "bfl": (5, 30.0, 60.0, 2),
    "file-download": (3, 5.0, 15.0, 2),
}


@pytest.fixture
def default() -> SidecarConfig:
    return load_config(None, {})


def test_embedded_default_is_byte_identical_to_configs_copy() -> None:
    """sidecar/config/default.yaml and configs/sidecar.yaml must not drift apart."""
    embedded = resources.files("sidecar.config").joinpath("default.yaml").read_bytes()
    assert embedded == (ROOT / "configs" / "sidecar.yaml").read_bytes()


def test_default_loads_with_an_empty_environment(default: SidecarConfig) -> None:
    """No variables set: the default still loads, with exactly the seven providers."""
    assert list(default.providers) == list(ORIGINAL_THRESHOLDS)


@pytest.mark.parametrize("name", list(ORIGINAL_THRESHOLDS))
def test_default_thresholds_match_the_spec_table(default: SidecarConfig, name: str) -> None:
    """Each provider's breaker has the original system's thresholds."""
    breaker = default.providers[name].breaker
    got = (breaker.failure_threshold, breaker.recovery_timeout, breaker.monitoring_period,
           breaker.success_threshold)
    assert got == ORIGINAL_THRESHOLDS[name]


def test_cb_variables_do_not_override_the_tables_explicit_values() -> None:
    """Every default provider sets its thresholds itself, so CB_* cannot change them."""
    config = load_config(None, {"CB_FAILURE_THRESHOLD": "50"})
    assert config.providers["replicate"].breaker.failure_threshold == 5


def test_defaults_block_is_the_documented_one(default: SidecarConfig) -> None:
    """Keys the providers don't set come from the defaults block: minimum_calls 20 and the rest."""
    replicate = default.providers["replicate"]
    assert replicate.breaker.minimum_calls == 20
    assert replicate.breaker.failure_rate_threshold == 0.5
    assert replicate.retry.retry_statuses == frozenset({429, 500, 502, 503, 504})
    assert replicate.retry.max_buffered_body == 1024 * 1024
    assert replicate.max_request_body == 100 * 1024 * 1024
    assert (replicate.timeouts.connect, replicate.timeouts.attempt, replicate.timeouts.total) == (
        5.0, 60.0, 120.0)
    assert (default.server.drain_time, default.server.shutdown_grace) == (5.0, 20.0)


def test_no_provider_is_critical(default: SidecarConfig) -> None:
    """An upstream outage must not take the bot's pod out of its Service."""
    assert not any(p.critical for p in default.providers.values())


def test_supabase_is_unconfigured_without_its_url(default: SidecarConfig) -> None:
    """SUPABASE_URL unset: supabase has no upstream and counts as unconfigured."""
    assert not default.providers["supabase"].configured
    with_url = load_config(None, {"SUPABASE_URL": "https://abc.supabase.co"})
    assert with_url.providers["supabase"].upstream == "https://abc.supabase.co"


def test_supabase_sends_the_key_in_both_headers() -> None:
    """PostgREST wants apikey: <key> and Authorization: Bearer <key>."""
    config = load_config(None, {"SUPABASE_SERVICE_KEY": "k"})
    auth = [(a.header, a.prefix, a.value) for a in config.providers["supabase"].auth]
    assert auth == [("apikey", "", "k"), ("Authorization", "Bearer ", "k")]


@pytest.mark.parametrize(
    ("name", "header", "prefix", "env"),
    [("replicate", "Authorization", "Bearer ", "REPLICATE_API_TOKEN"),
     ("elevenlabs", "xi-api-key", "", "ELEVENLABS_API_KEY"),
     ("synclabs", "x-api-key", "", "SYNC_LABS_API_KEY"),
     ("huggingface", "Authorization", "Bearer ", "HF_TOKEN"),
     ("bfl", "x-key", "", "BFL_API_KEY")],
)
def test_provider_keys_come_from_the_original_variables(
        default: SidecarConfig, name: str, header: str, prefix: str, env: str) -> None:
    """Each provider injects its key in the header the provider documents."""
    (auth,) = default.providers[name].auth
    assert (auth.header, auth.prefix, auth.env) == (header, prefix, env)


def test_probes_are_cheap_documented_endpoints(default: SidecarConfig) -> None:
    """The probe paths chosen in the README; file-download has none."""
    probes = {n: (p.health.method, p.health.path) if p.health else None
              for n, p in default.providers.items()}
    assert probes == {
        "replicate": ("GET", "/v1/account"),
        "supabase": ("GET", "/auth/v1/health"),
        "elevenlabs": ("GET", "/v1/user"),
        "synclabs": ("GET", "/v2/generations?limit=1"),
        "huggingface": ("GET", "/config"),
        "bfl": ("GET", "/v1/credits"),
        "file-download": None,
    }


def test_job_creating_posts_are_never_retried(default: SidecarConfig) -> None:
    """Paid job creation is one attempt, stated explicitly per route."""
    jobs = {("replicate", "create_prediction"), ("replicate", "create_model_prediction"),
            ("replicate", "create_training"), ("replicate", "create_model"),
            ("elevenlabs", "text_to_speech"), ("elevenlabs", "add_voice"),
            ("synclabs", "generate"), ("bfl", "create_finetune"), ("huggingface", "caption_call")}
    for provider_name, route_name in jobs:
        routes = {r.name: r for r in default.providers[provider_name].routes}
        assert routes[route_name].method == "POST"
        assert routes[route_name].retry.max_attempts == 1, route_name


def test_replicate_training_route_is_the_sdk_path(default: SidecarConfig) -> None:
    """create_training matches the path replicate.trainings.create calls."""
    routes = {r.name: r for r in default.providers["replicate"].routes}
    path = "/v1/models/{owner}/{name}/versions/{version}/trainings"
    assert routes["create_training"].path == path
    assert routes["get_training"].retry.max_attempts == 3


def test_file_download_allow_list(default: SidecarConfig) -> None:
    """file-download: https only, the original hosts, 50 MiB, no private networks."""
    download = default.providers["file-download"].download
    assert download is not None
    assert download.allowed_hosts == (
        "replicate.delivery", "*.replicate.delivery", "*.supabase.co", "api.telegram.org")
    assert download.allowed_schemes == ("https",)
    assert download.max_download_size == 50 * 1024 * 1024
    assert not download.allow_private_networks and download.max_redirects == 5


def test_default_dump_round_trips_without_secrets() -> None:
    """check-config output of the default reloads to the same configuration and hides keys."""
    env = {"REPLICATE_API_TOKEN": "r8_FAKE_TOKEN_123", "SUPABASE_URL": "https://a.supabase.co",
           "SUPABASE_SERVICE_KEY": "eyFAKEjwt"}
    config = load_config(None, env)
    text = dump_effective(config)
    assert "r8_FAKE_TOKEN_123" not in text and "eyFAKEjwt" not in text
    assert parse_config(yaml.safe_load(text), env) == config
