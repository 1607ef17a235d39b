"""Configuration traps that are legal (warnings) and the ones that are not (errors), as pure functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config.dump import (
    ConfigWarning,
    config_warnings,
    referenced_variables,
    unconfigured_providers,
)
from sidecar.config.load import ConfigError, load_config, parse_config, read_document


def warnings_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    """The warnings of the YAML ``text`` as ``key: message`` lines (the config must load)."""
    env = environ or {}
    document = yaml.safe_load(text)
    return [str(w) for w in config_warnings(document, parse_config(document, env), env)]


SUPABASE = """
providers:
  supabase:
    upstream: ${SUPABASE_URL}
    auth:
      - {header: apikey, env: SUPABASE_SERVICE_KEY}
      - {header: Authorization, prefix: "Bearer ", env: SUPABASE_SERVICE_KEY}
"""


def test_unset_upstream_variable_names_the_provider_and_the_consequence() -> None:
    """${SUPABASE_URL} unset: the warning names the key, the variable and the 503 that follows."""
    assert warnings_of(SUPABASE) == [
        "providers.supabase.upstream: ${SUPABASE_URL} is unset: supabase is unconfigured "
        "(503 provider_unconfigured)"]


def test_empty_upstream_variable_is_called_empty() -> None:
    """A variable that is set but blank is reported as empty, not unset."""
    found = warnings_of(SUPABASE, {"SUPABASE_URL": " "})
    assert found[0].startswith("providers.supabase.upstream: ${SUPABASE_URL} is empty: supabase")


def test_unset_key_variable_says_no_header_is_injected() -> None:
    """A configured provider without its key: one warning per variable, naming both headers."""
    found = warnings_of(SUPABASE, {"SUPABASE_URL": "https://x.supabase.co"})
    assert found == [
        "providers.supabase.auth: SUPABASE_SERVICE_KEY is unset: no apikey or Authorization header "
        "is injected, so requests to supabase go without a key unless the bot sends one "
        "(expect the provider's 401)"]


def test_a_fully_set_environment_has_no_warnings() -> None:
    """Every variable set: nothing to warn about."""
    env = {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_KEY": "k"}
    assert warnings_of(SUPABASE, env) == []


def test_an_upstream_override_silences_the_unset_reference() -> None:
    """SIDECAR_SUPABASE_UPSTREAM replaces the upstream, so ${SUPABASE_URL} being unset is no trap."""
    env = {"SIDECAR_SUPABASE_UPSTREAM": "http://127.0.0.1:9", "SUPABASE_SERVICE_KEY": "k"}
    assert warnings_of(SUPABASE, env) == []


def test_unset_variable_elsewhere_expands_to_empty() -> None:
    """A ${VAR} outside an upstream is reported at its own key."""
    text = ('providers:\n  p:\n    upstream: https://a.example\n'
            '    auth: {header: X-Org, prefix: "${ORG}-", env: K}\n')
    found = warnings_of(text, {"K": "v"})
    assert found == ["providers.p.auth.prefix: ${ORG} is unset: it expands to an empty string"]


@pytest.mark.parametrize(
    ("text", "key", "millis"),
    [("server: {drain_time: 30}\nproviders: {p: {upstream: https://a}}", "server.drain_time", 30),
     ("defaults: {breaker: {recovery_timeout: 30}}\nproviders: {p: {upstream: https://a}}",
      "defaults.breaker.recovery_timeout", 30),
     ("providers: {p: {upstream: https://a, routes: [{name: r, path: /x, timeouts: {attempt: 90}}]}}",
      "providers.p.routes[0].timeouts.attempt", 90),
     ("providers: {p: {upstream: https://a, health: {timeout: 5}}}", "providers.p.health.timeout", 5)],
)
def test_bare_integer_duration_under_a_second_is_flagged(text: str, key: str, millis: int) -> None:
    """``drain_time: 30`` is 30 ms: the warning names the key and says so."""
    assert warnings_of(text) == [
        f"{key}: {millis} is {millis} ms: a bare integer duration is milliseconds "
        f"(write '{millis}s' for seconds, or '{millis}ms' to say it is meant)"]


@pytest.mark.parametrize("value", ["30000", "0", "30s", "250ms"])
def test_durations_that_say_what_they_mean_are_not_flagged(value: str) -> None:
    """Units, zero and integers of 1000 ms or more are clear: no warning."""
    assert warnings_of(f"server: {{drain_time: {value}}}\nproviders: {{p: {{upstream: https://a}}}}") == []


def test_breaker_variable_in_milliseconds_under_a_second_is_flagged() -> None:
    """CB_RECOVERY_TIMEOUT=30 is 30 ms (the variables are integer milliseconds)."""
    found = warnings_of("providers: {p: {upstream: https://a}}", {"CB_RECOVERY_TIMEOUT": "30"})
    assert found == ["CB_RECOVERY_TIMEOUT: 30 is 30 ms: a bare integer duration is milliseconds "
                     "(write '30s' for seconds, or '30ms' to say it is meant)"]
    assert warnings_of("providers: {p: {upstream: https://a}}", {"CB_FAILURE_THRESHOLD": "3"}) == []


@pytest.mark.parametrize("text", ["providers: {}", "server: {port: 8080}", ""])
def test_no_providers_is_a_warning(text: str) -> None:
    """A configuration without providers loads, with a warning that every call will be 404."""
    assert warnings_of(text) == [
        "providers: no providers are configured: every request to a provider path gets "
        "404 unknown_provider"]


def test_warning_renders_as_key_and_message() -> None:
    """str() of a warning is the same ``key: message`` form as a problem line."""
    assert str(ConfigWarning("a.b", "c")) == "a.b: c"


def test_the_embedded_default_warns_about_each_unset_variable() -> None:
    """With an empty environment the default loads, with one warning per unset variable."""
    source, document = read_document(None, {})
    config = parse_config(document, {})
    keys = [w.key for w in config_warnings(document, config, {})]
    assert source == "<embedded default.yaml>"
    assert keys == ["providers.supabase.upstream", "providers.replicate.auth",
                    "providers.elevenlabs.auth", "providers.synclabs.auth",
                    "providers.huggingface.auth", "providers.bfl.auth"]


def test_unconfigured_providers_name_the_missing_variable() -> None:
    """The missing variable: the upstream's unset ${VAR}, else the provider's upstream override."""
    text = "providers: {a: {upstream: '${A_URL}'}, b: {upstream: ''}, c: {upstream: https://c}}"
    document = yaml.safe_load(text)
    config = parse_config(document, {})
    assert unconfigured_providers(document, config, {}) == {"a": "A_URL", "b": "SIDECAR_B_UPSTREAM"}


def test_referenced_variables_of_the_default() -> None:
    """Every variable the embedded default reads, with the keys that read it."""
    _, document = read_document(None, {})
    found = referenced_variables(document)
    assert set(found) == {"REPLICATE_API_TOKEN", "SUPABASE_URL", "SUPABASE_SERVICE_KEY",
                          "ELEVENLABS_API_KEY", "SYNC_LABS_API_KEY", "HF_TOKEN", "BFL_API_KEY"}
    assert found["SUPABASE_URL"] == ["providers.supabase.upstream"]


# --- the traps that are errors ----------------------------------------------------------------

def test_upstream_variable_for_a_missing_provider_is_an_error() -> None:
    """SIDECAR_OPENAI_UPSTREAM with no openai provider: exit-2 problem naming the variable."""
    data: dict[str, Any] = {"providers": {"my-api": {"upstream": "https://a"}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, {"SIDECAR_OPENAI_UPSTREAM": "https://api.openai.com"})
    assert info.value.problems == [
        "SIDECAR_OPENAI_UPSTREAM: names no provider of this configuration (providers: my-api)"]


def test_upstream_variable_that_is_empty_or_not_an_override_is_ignored() -> None:
    """Empty overrides count as unset, and SIDECAR_CONFIG/SIDECAR_ADMIN_TOKEN are not overrides."""
    env = {"SIDECAR_OPENAI_UPSTREAM": "", "SIDECAR_CONFIG": "/x", "SIDECAR_ADMIN_TOKEN": "t",
           "SIDECAR_MY_API_UPSTREAM": "http://127.0.0.1:1"}
    config = parse_config({"providers": {"my-api": {"upstream": "https://a"}}}, env)
    assert config.providers["my-api"].upstream == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("providers:\n  p: [unclosed\n",
      "invalid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>' "
      "(while parsing a flow sequence at line 2, column 6)"),
     ("server:\n  port: 1\n  port: 2\n", "invalid YAML at line 3, column 3: duplicate key 'port'"),
     ("a: b: c\n", "invalid YAML at line 1, column 5: mapping values are not allowed here")],
)
def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path, text: str,
                                                     expected: str) -> None:
    """A YAML error is one line: the file, then the 1-based line and column of the problem."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert info.value.problems == [f"{path}: {expected}"]
