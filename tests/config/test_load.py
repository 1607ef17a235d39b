"""Loading, validating and merging the configuration file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config import SidecarConfig
from sidecar.config.load import ConfigError, dump_effective, load_config, parse_config

FAKE_KEY = "sk-FAKE-5ec2e7-do-not-leak"


def problems_of(data: object, environ: dict[str, str] | None = None) -> list[str]:
    """The problems parse_config reports for ``data`` (fails the test if it accepts it)."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ or {})
    return info.value.problems


def provider(**block: Any) -> dict[str, Any]:
    """A config with one proxy provider ``p`` whose block is ``block``."""
    return {"providers": {"p": {"upstream": "https://api.example.com", **block}}}


# --- validation: every rule names its dotted key ------------------------------------------------

@pytest.mark.parametrize(
    ("data", "line"),
    [
        (provider(breaker={"failure_threshold": 0}),
         "providers.p.breaker.failure_threshold: must be >= 1, got 0"),
        (provider(breaker={"success_threshold": 0}),
         "providers.p.breaker.success_threshold: must be >= 1, got 0"),
        (provider(breaker={"half_open_max_calls": 0}),
         "providers.p.breaker.half_open_max_calls: must be >= 1, got 0"),
        (provider(breaker={"minimum_calls": -1}),
         "providers.p.breaker.minimum_calls: must be >= 0, got -1"),
        (provider(breaker={"failure_rate_threshold": 0}),
         "providers.p.breaker.failure_rate_threshold: must be > 0, got 0"),
        (provider(breaker={"failure_rate_threshold": 1.5}),
         "providers.p.breaker.failure_rate_threshold: must be <= 1, got 1.5"),
        (provider(breaker={"recovery_timeout": "0s"}),
         "providers.p.breaker.recovery_timeout: must be > 0, got '0s'"),
        (provider(breaker={"recovery_timeout": "30s", "max_recovery_timeout": "10s"}),
         "providers.p.breaker.max_recovery_timeout: must be >= recovery_timeout (30s), got 10s"),
        (provider(retry={"max_attempts": 0}),
         "providers.p.retry.max_attempts: must be >= 1, got 0"),
        (provider(retry={"retry_statuses": [429, 600]}),
         "providers.p.retry.retry_statuses: item 1 must be <= 599, got 600"),
        (provider(failure_statuses=[99]),
         "providers.p.failure_statuses: item 0 must be >= 100, got 99"),
        (provider(timeouts={"connect": -5}), "providers.p.timeouts.connect: must not be negative"),
        (provider(max_concurrent=0), "providers.p.max_concurrent: must be >= 1, got 0"),
        (provider(max_request_body="lots"), "providers.p.max_request_body: must be a size like"),
        (provider(upstream="ftp://h"), "providers.p.upstream: must be an http(s) URL"),
        (provider(upstream="https://h/x?q=1"), "providers.p.upstream: must not have a query"),
        (provider(upstream="https://user:pw@h"),
         "providers.p.upstream: must not carry credentials"),
        (provider(kind="socks"), "providers.p.kind: must be one of proxy, download, got 'socks'"),
        (provider(critical="maybe"), "providers.p.critical: must be true or false, got 'maybe'"),
        (provider(health={"path": "v1/x"}), "providers.p.health.path: must start with '/'"),
        (provider(health={"interval": "0ms"}), "providers.p.health.interval: must be > 0"),
        (provider(allowed_hosts=["x.com"]),
         "providers.p.allowed_hosts: is only for kind: download"),
        ({"server": {"port": 70000}}, "server.port: must be <= 65535, got 70000"),
        ({"server": {"ops_port": -1}}, "server.ops_port: must be >= 0, got -1"),
        ({"server": {"access_log": 1}}, "server.access_log: must be true or false, got 1"),
        ({"providers": {"Bad!": {}}}, "providers.Bad!: a provider name must match"),
        ({"providers": {"metrics": {}}}, "providers.metrics: 'metrics' is reserved"),
        ({"providers": {"admin": {}}}, "providers.admin: 'admin' is reserved"),
        ({"providers": {"unknown": {}}}, "providers.unknown: 'unknown' is reserved as the metrics label"),
        ({"providers": []}, "providers: must be a mapping, got a list"),
        ([1, 2], "(top level): must be a mapping, got a list"),
    ],
)
def test_each_rule_reports_the_dotted_key(data: object, line: str) -> None:
    """A bad value produces one line that starts with its dotted key and says what is wrong."""
    found = problems_of(data)
    assert any(p.startswith(line) for p in found), found


@pytest.mark.parametrize(
    ("block", "line"),
    [
        ({"routes": [{"name": "Get-It", "path": "/x"}]},
         "providers.p.routes[0].name: must be lower-case letters, digits and '_'"),
        ({"routes": [{"name": "a", "path": "/x"}, {"name": "a", "path": "/y"}]},
         "providers.p.routes[1].name: duplicate route 'a'"),
        ({"routes": [{"name": "a", "path": "/x/{id"}]}, "providers.p.routes[0].path:"),
        ({"routes": [{"name": "a", "path": "/x/a{id}"}]}, "providers.p.routes[0].path:"),
        ({"routes": [{"name": "a", "path": "/x?y=1"}]}, "providers.p.routes[0].path:"),
        ({"routes": [{"path": "/x"}]}, "providers.p.routes[0].name: is required"),
        ({"routes": [{"name": "a", "path": "/x", "method": "G T"}]},
         "providers.p.routes[0].method: must be an HTTP method name"),
        ({"routes": [{"name": "a", "path": "/x", "retry": {"max_attempts": 0}}]},
         "providers.p.routes[0].retry.max_attempts: must be >= 1, got 0"),
        ({"routes": {"name": "a"}}, "providers.p.routes: must be a list of routes"),
    ],
)
def test_route_rules_report_the_dotted_key(block: dict[str, Any], line: str) -> None:
    """Route names, paths, methods and overrides are validated with their index in the list."""
    found = problems_of(provider(**block))
    assert any(p.startswith(line) for p in found), found


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"serverz": {}}, "serverz"),
        ({"server": {"hots": "x"}}, "server.hots"),
        ({"defaults": {"breakers": {}}}, "defaults.breakers"),
        ({"defaults": {"retry": {"attempts": 2}}}, "defaults.retry.attempts"),
        (provider(upstrem="https://x"), "providers.p.upstrem"),
        (provider(breaker={"threshold": 1}), "providers.p.breaker.threshold"),
        (provider(health={"url": "/x"}), "providers.p.health.url"),
        (provider(auth={"header": "X", "env": "E", "secret": "s"}), "providers.p.auth.secret"),
        (provider(routes=[{"name": "a", "path": "/x", "breaker": {}}]),
         "providers.p.routes[0].breaker"),
    ],
)
def test_unknown_keys_are_errors(data: object, key: str) -> None:
    """A misspelt key anywhere is reported, never silently ignored."""
    found = problems_of(data)
    assert any(p.startswith(f"{key}: unknown key (expected one of:") for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    """Validation does not stop at the first problem."""
    data = {"server": {"port": -1},
            "providers": {"p": {"breaker": {"failure_threshold": 0}, "bogus": 1},
                          "health": {}}}
    found = problems_of(data, {"CB_FAILURE_THRESHOLD": "x"})
    assert len(found) == 5, found


def test_timeout_attempt_larger_than_total_is_allowed() -> None:
    """timeouts.attempt above timeouts.total is allowed: the total wins at run time."""
    config = parse_config(provider(timeouts={"attempt": "90s", "total": "30s"}), {})
    assert config.providers["p"].timeouts.attempt == 90.0


def test_methods_are_upper_cased() -> None:
    """Route and probe methods are stored upper-case."""
    config = parse_config(provider(health={"method": "head", "path": "/"},
                                   routes=[{"name": "a", "method": "post", "path": "/x"}]), {})
    assert config.providers["p"].routes[0].method == "POST"
    assert config.providers["p"].health is not None
    assert config.providers["p"].health.method == "HEAD"


def test_upstream_trailing_slash_is_removed_and_prefix_kept() -> None:
    """An upstream path is a prefix; only the trailing slash goes."""
    config = parse_config(provider(upstream="https://h/api/v2/"), {})
    assert config.providers["p"].upstream == "https://h/api/v2"


def test_port_zero_is_allowed_for_tests() -> None:
    """Port 0 (any free port) is accepted for both listeners."""
    config = parse_config({"server": {"port": 0, "ops_port": 0}}, {})
    assert (config.server.port, config.server.ops_port) == (0, 0)


def test_download_provider_refuses_proxy_keys() -> None:
    """A download provider takes no upstream, auth, probe or routes: keys must never leak."""
    data = {"providers": {"dl": {"kind": "download", "upstream": "https://x",
                                 "auth": {"header": "X", "env": "E"}}}}
    found = problems_of(data)
    assert "providers.dl.upstream: is not used by kind: download" in found
    assert "providers.dl.auth: is not used by kind: download" in found


def test_download_provider_keys_and_defaults() -> None:
    """Download keys land in DownloadConfig; max_redirects defaults to 5, schemes to https."""
    data = {"providers": {"dl": {"kind": "download", "allowed_hosts": ["*.Example.com"],
                                 "max_download_size": "1MiB"}}}
    download = parse_config(data, {}).providers["dl"].download
    assert download is not None
    assert download.allowed_hosts == ("*.example.com",)
    assert (download.max_redirects, download.allowed_schemes) == (5, ("https",))
    assert download.max_download_size == 1024 * 1024


def download_hosts(*hosts: object) -> dict[str, Any]:
    """A config with one download provider ``dl`` allowing ``hosts``."""
    return {"providers": {"dl": {"kind": "download", "allowed_hosts": list(hosts)}}}


def test_ip_literals_in_allowed_hosts_are_accepted_in_canonical_form(tmp_path: Path) -> None:
    """IPv4 and IPv6 literals, bare or bracketed, load from a file; IPv6 in compressed form."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  dl:\n    kind: download\n    allowed_hosts:\n"
        "      - 192.0.2.7\n      - '::1'\n      - '[::1]'\n      - FD00:EC2::254\n"
        "      - '[0:0:0:0:0:0:0:1]'\n      - 2001:DB8:0:0::7\n      - '*.example.com'\n"
    )
    download = load_config(str(path), {}).providers["dl"].download
    assert download is not None
    assert download.allowed_hosts == (
        "192.0.2.7", "::1", "::1", "fd00:ec2::254", "::1", "2001:db8::7", "*.example.com")
    config = parse_config(download_hosts("::1", "[fd00:ec2::254]"), {})
    assert parse_config(yaml.safe_load(dump_effective(config)), {}) == config


@pytest.mark.parametrize(
    "entry", ["[::1", "::1]", "1:2:3", "fe80::1%eth0", "[fe80::1%25eth0]", "*.::1", "[x.com]",
              "::1:", "http://[::1]", "[]"])
def test_malformed_ip_literals_in_allowed_hosts_are_refused(entry: str) -> None:
    """A broken or zoned IPv6 literal is one problem naming the entry."""
    found = problems_of(download_hosts("ok.example", entry))
    assert len(found) == 1
    assert found[0].startswith("providers.dl.allowed_hosts: item 1 must be a host name")
    assert repr(entry) in found[0]


# --- merging: defaults -> provider -> route, key by key -----------------------------------------

def test_provider_overrides_defaults_key_by_key() -> None:
    """A provider's breaker block changes only the keys it names."""
    data = {"defaults": {"breaker": {"monitoring_period": "2m", "failure_threshold": 9}},
            **provider(breaker={"failure_threshold": 3})}
    breaker = parse_config(data, {}).providers["p"].breaker
    assert (breaker.failure_threshold, breaker.monitoring_period) == (3, 120.0)
    assert breaker.recovery_timeout == 30.0


def test_route_overrides_provider_key_by_key() -> None:
    """A route's retry block keeps the provider's other retry keys and timeouts."""
    data = {"defaults": {"retry": {"base_delay": "2s"}},
            **provider(retry={"max_delay": "5s"}, timeouts={"total": "10s"},
                       routes=[{"name": "job", "method": "POST", "path": "/jobs",
                                "retry": {"max_attempts": 1}, "failure_statuses": [503]}])}
    config = parse_config(data, {}).providers["p"]
    route = config.routes[0]
    assert (route.retry.max_attempts, route.retry.base_delay, route.retry.max_delay) == (1, 2, 5)
    assert route.timeouts.total == 10.0
    assert route.failure_statuses == frozenset({503})
    assert config.retry.max_attempts == 3


def test_scalar_policies_inherit_from_defaults() -> None:
    """failure_statuses, max_request_body and max_concurrent come from defaults unless set."""
    data = {"defaults": {"failure_statuses": [502], "max_request_body": "2MiB",
                         "max_concurrent": 7}, **provider(max_concurrent=None)}
    config = parse_config(data, {}).providers["p"]
    assert config.failure_statuses == frozenset({502})
    assert config.max_request_body == 2 * 1024 * 1024
    assert config.max_concurrent is None


# --- environment ---------------------------------------------------------------------------------

def test_cb_variables_set_the_default_breaker() -> None:
    """CB_* set defaults.breaker: integers are milliseconds."""
    env = {"CB_FAILURE_THRESHOLD": "7", "CB_RECOVERY_TIMEOUT": "15000",
           "CB_MONITORING_PERIOD": "90000"}
    breaker = parse_config(provider(), env).providers["p"].breaker
    assert (breaker.failure_threshold, breaker.recovery_timeout, breaker.monitoring_period) == (
        7, 15.0, 90.0)


def test_provider_value_wins_over_cb_variables() -> None:
    """A provider's own explicit breaker value beats the CB_* override."""
    env = {"CB_FAILURE_THRESHOLD": "7", "CB_RECOVERY_TIMEOUT": "15000"}
    breaker = parse_config(provider(breaker={"failure_threshold": 2}), env).providers["p"].breaker
    assert (breaker.failure_threshold, breaker.recovery_timeout) == (2, 15.0)


def test_cb_variables_beat_the_files_defaults_block() -> None:
    """The environment applies on top of the file's defaults."""
    data = {"defaults": {"breaker": {"failure_threshold": 9}}, **provider()}
    breaker = parse_config(data, {"CB_FAILURE_THRESHOLD": "4"}).providers["p"].breaker
    assert breaker.failure_threshold == 4


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [("CB_FAILURE_THRESHOLD", "zero", "CB_FAILURE_THRESHOLD: must be an integer"),
     ("CB_FAILURE_THRESHOLD", "0", "CB_FAILURE_THRESHOLD: must be >= 1, got 0"),
     ("CB_RECOVERY_TIMEOUT", "-5", "CB_RECOVERY_TIMEOUT: must not be negative"),
     ("CB_MONITORING_PERIOD", "1 minute", "CB_MONITORING_PERIOD: "),
     ("SIDECAR_P_UPSTREAM", "not a url", "SIDECAR_P_UPSTREAM: must be an http(s) URL"),
     ("SIDECAR_FLEET_LEASE_TTL", "soon", "SIDECAR_FLEET_LEASE_TTL: "),
     ("SIDECAR_FLEET_LEASE_TTL", "0", "SIDECAR_FLEET_LEASE_TTL: must be > 0")],
)
def test_bad_environment_override_names_the_variable(var: str, value: str, message: str) -> None:
    """A bad override is a ConfigError line that starts with the variable's name."""
    found = problems_of(provider(), {var: value})
    assert any(p.startswith(message) for p in found), found


def test_upstream_override_replaces_one_provider() -> None:
    """SIDECAR_<NAME>_UPSTREAM (upper-cased, '-' as '_') replaces that provider's upstream."""
    data = {"providers": {"my-api": {"upstream": "https://old"}, "other": {"upstream": "https://o"}}}
    config = parse_config(data, {"SIDECAR_MY_API_UPSTREAM": "http://127.0.0.1:9000/"})
    assert config.providers["my-api"].upstream == "http://127.0.0.1:9000"
    assert config.providers["other"].upstream == "https://o"


def test_variables_are_expanded_in_string_values() -> None:
    """${VAR} expands anywhere in a string value; an unset one becomes empty."""
    data = provider(upstream="https://${HOST}/v${VER}", timeouts={"total": "${TOTAL}"})
    config = parse_config(data, {"HOST": "h.example", "TOTAL": "45s"})
    assert config.providers["p"].upstream == "https://h.example/v"
    assert config.providers["p"].timeouts.total == 45.0


def test_numbers_from_variables_are_accepted() -> None:
    """A number written as ${VAR} arrives as a string and is still accepted."""
    config = parse_config(provider(breaker={"failure_threshold": "${N}"}), {"N": "4"})
    assert config.providers["p"].breaker.failure_threshold == 4


def test_unset_upstream_variable_makes_the_provider_unconfigured() -> None:
    """supabase with SUPABASE_URL unset loads, but is not configured."""
    data = {"providers": {"supabase": {"upstream": "${SUPABASE_URL}"}}}
    supabase = parse_config(data, {}).providers["supabase"]
    assert supabase.upstream == "" and not supabase.configured


# --- auth ----------------------------------------------------------------------------------------

def test_auth_list_form_resolves_each_secret() -> None:
    """A list of auth mappings injects several headers; values come from the environment."""
    auth = [{"header": "apikey", "env": "KEY"},
            {"header": "Authorization", "prefix": "Bearer ", "env": "KEY"}]
    config = parse_config(provider(auth=auth), {"KEY": f"  {FAKE_KEY}\n"})
    headers = config.providers["p"].auth
    assert [(h.header, h.prefix, h.value) for h in headers] == [
        ("apikey", "", FAKE_KEY), ("Authorization", "Bearer ", FAKE_KEY)]
    assert config.providers["p"].has_credentials


def test_auth_secret_unset_or_empty_is_none() -> None:
    """An unset or empty variable leaves the value None: the provider has no credentials."""
    for env in ({}, {"KEY": ""}):
        config = parse_config(provider(auth={"header": "X-Key", "env": "KEY"}), env)
        assert config.providers["p"].auth[0].value is None
        assert not config.providers["p"].has_credentials


def test_auth_refuses_a_secret_written_in_the_file_without_echoing_it() -> None:
    """value: in the file may only be null or <redacted>, and the error never shows the secret."""
    found = problems_of(provider(auth={"header": "X", "env": "E", "value": FAKE_KEY}))
    assert any(p.startswith("providers.p.auth.value:") for p in found)
    assert FAKE_KEY not in "\n".join(found)


def test_auth_requires_header_and_env() -> None:
    """Each auth entry names its header and its variable."""
    found = problems_of(provider(auth=[{"prefix": "Bearer "}]))
    assert "providers.p.auth[0].header: is required" in found
    assert "providers.p.auth[0].env: is required" in found


def test_auth_secret_with_a_line_break_is_refused_without_echo() -> None:
    """A secret with an inner line break would split the header: refused, value not shown."""
    found = problems_of(provider(auth={"header": "X", "env": "KEY"}), {"KEY": "ab\ncd"})
    assert found == ["KEY: contains a line break (the value is not shown)"]


# --- files ---------------------------------------------------------------------------------------

def test_load_config_reads_a_file(tmp_path: Path) -> None:
    """An explicit path is read and parsed."""
    path = tmp_path / "c.yaml"
    path.write_text("providers:\n  p: {upstream: 'https://h'}\n")
    assert load_config(str(path), {}).providers["p"].upstream == "https://h"


def test_load_config_uses_sidecar_config_variable(tmp_path: Path) -> None:
    """With no path, SIDECAR_CONFIG names the file."""
    path = tmp_path / "c.yaml"
    path.write_text("providers: {only: {upstream: 'https://h'}}\n")
    assert list(load_config(None, {"SIDECAR_CONFIG": str(path)}).providers) == ["only"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is one ConfigError line naming the path."""
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yaml"), {})
    assert info.value.problems[0].startswith(f"{tmp_path / 'nope.yaml'}: cannot read")


@pytest.mark.parametrize(
    "text", ["providers: [unclosed", "a: 1\na: 2\n", "x: !!python/name:os.system\n"])
def test_bad_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    """Broken YAML, duplicate keys and unsafe tags are refused with one line."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert len(info.value.problems) == 1 and "invalid YAML" in info.value.problems[0]


def test_empty_file_gives_an_empty_configuration(tmp_path: Path) -> None:
    """An empty file is valid: default server, no providers."""
    path = tmp_path / "c.yaml"
    path.write_text("")
    config = load_config(str(path), {})
    assert config.server.port == 8080 and not config.providers


# --- robustness ----------------------------------------------------------------------------------

KEYS = st.sampled_from(["server", "defaults", "providers", "breaker", "retry", "auth", "routes",
                        "health", "kind", "upstream", "port", "name", "path", "header", "env",
                        "failure_threshold", "timeouts", "total", "p", "file-download"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(["30s", "1MiB", "download", "https://h", "/x/{id}", "${HOME}", "GET"]))
DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(KEYS | st.integers() | st.text(max_size=5), inner, max_size=5),
    max_leaves=40)
# arbitrary data, plus arbitrary data placed where a provider and the defaults block are read
SHAPED = DATA | st.builds(
    lambda block, other: {"defaults": other, "providers": {"p": block, "dl": {"kind": "download"}}},
    DATA, DATA)


@settings(max_examples=300, deadline=None)
@given(SHAPED)
def test_arbitrary_data_gives_a_config_or_a_config_error(data: object) -> None:
    """parse_config never raises anything but ConfigError, whatever the YAML holds."""
    try:
        result = parse_config(data, {"HOME": "/root"})
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and "\n" not in p for p in exc.problems)
    else:
        assert isinstance(result, SidecarConfig)


def test_header_read_timeout_is_a_server_duration() -> None:
    """server.header_read_timeout takes a duration, defaults to 10 s, and refuses zero."""
    assert parse_config({}, {}).server.header_read_timeout == 10.0
    assert parse_config({"server": {"header_read_timeout": "2500ms"}}, {}).server.header_read_timeout == 2.5
    with pytest.raises(ConfigError) as err:
        parse_config({"server": {"header_read_timeout": 0}}, {})
    assert any(p.startswith("server.header_read_timeout:") for p in err.value.problems)
