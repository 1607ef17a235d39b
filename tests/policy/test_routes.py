"""The route table: templates, order, methods, and raw paths that can't cross segments."""

from __future__ import annotations

import pytest

from sidecar.config import RouteConfig
from sidecar.policy.routes import RouteTable, compile_template

CREATE_TRAINING = RouteConfig(
    name="create_training",
    method="POST",
    path="/v1/models/{owner}/{name}/versions/{version}/trainings",
)
GET_TRAINING = RouteConfig(name="get_training", method="GET", path="/v1/trainings/{id}")
CANCEL_TRAINING = RouteConfig(
    name="cancel_training", method="POST", path="/v1/trainings/{id}/cancel"
)
ANY_TRAINING = RouteConfig(name="any_training", path="/v1/trainings/{id}")
LIST_MODELS = RouteConfig(name="list_models", method="GET", path="/v1/models")

TABLE = RouteTable([CREATE_TRAINING, GET_TRAINING, CANCEL_TRAINING, ANY_TRAINING, LIST_MODELS])


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/models/acme/flux/versions/abc123/trainings", CREATE_TRAINING),
        ("GET", "/v1/trainings/t-1", GET_TRAINING),
        ("POST", "/v1/trainings/t-1/cancel", CANCEL_TRAINING),
        ("GET", "/v1/models", LIST_MODELS),
        ("get", "/v1/models", LIST_MODELS),
    ],
)
def test_templates_match_their_paths(method: str, path: str, expected: RouteConfig) -> None:
    """Each route matches its own method and path, whatever the method's case."""
    assert TABLE.match(method, path) is expected


def test_first_match_wins() -> None:
    """Where two routes match, the earlier one in the list is chosen."""
    assert TABLE.match("GET", "/v1/trainings/t-1") is GET_TRAINING
    assert (
        RouteTable([ANY_TRAINING, GET_TRAINING]).match("GET", "/v1/trainings/t-1") is ANY_TRAINING
    )


def test_method_filters_and_none_means_any() -> None:
    """A route with a method only matches that method; a route without one takes any."""
    assert TABLE.match("DELETE", "/v1/trainings/t-1") is ANY_TRAINING
    assert TABLE.match("POST", "/v1/models") is None


@pytest.mark.parametrize(
    "path",
    [
        "/v1/trainings/",  # a variable needs a non-empty segment
        "/v1/trainings/a/b",  # and exactly one
        "/v1/trainings/t-1/",  # a trailing slash is another path
        "/v1/models/acme/flux/versions/abc/trainings/extra",
        "/v1/models?x=1",  # callers pass the path without the query
        "/v2/models",
        "",
    ],
)
def test_paths_that_do_not_match(path: str) -> None:
    """Segments are counted exactly: empty, extra or missing segments don't match."""
    assert TABLE.match("GET", path) is None


def test_encoded_slashes_stay_inside_one_segment() -> None:
    """%2F is matched raw, so it stays in its segment and can't reach a longer template."""
    assert TABLE.match("GET", "/v1/trainings/a%2Fcancel") is GET_TRAINING
    assert TABLE.match("POST", "/v1/trainings/a%2Fb/cancel") is CANCEL_TRAINING
    assert TABLE.match("POST", "/v1/trainings/a%2Fb%2Fcancel") is ANY_TRAINING


def test_template_literals_are_not_regexes() -> None:
    """Dots and other regex characters in a template match only themselves."""
    table = RouteTable([RouteConfig(name="file", path="/files/{id}.json")])
    assert table.match("GET", "/files/42.json") is not None
    assert table.match("GET", "/files/42xjson") is None


def test_empty_table_matches_nothing() -> None:
    """A provider without routes has every request as operation 'other'."""
    assert RouteTable([]).match("GET", "/anything") is None


@pytest.mark.parametrize("template", ["/v1/{id", "/v1/id}", "/v1/{}", "/v1/{a-b}", "v1/x"])
def test_malformed_templates_are_refused(template: str) -> None:
    """Stray braces, bad variable names and relative paths fail when the table is built."""
    with pytest.raises(ValueError, match="route path"):
        compile_template(template)
