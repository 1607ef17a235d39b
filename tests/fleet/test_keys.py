"""Key names: one hash tag per provider, names escaped so that no two budgets share a key."""

from __future__ import annotations

from sidecar.fleet.keys import FleetKeys, escape
from sidecar.policy.admission import PROVIDER_SCOPE


def test_names_outside_the_safe_set_are_percent_escaped() -> None:
    """Colons, braces, stars, spaces and non-ASCII never reach a key as they are."""
    assert escape("black-forest_labs.v2") == "black-forest_labs.v2"
    assert escape("a:b{c}*d é") == "a%3Ab%7Bc%7D%2Ad%20%C3%A9"


def test_a_provider_and_a_route_never_share_a_key() -> None:
    """Provider ``a:b`` and provider ``a`` with route ``b`` get different keys."""
    keys = FleetKeys()
    assert keys.tat("a:b", PROVIDER_SCOPE) != keys.tat("a", "b")
    assert keys.leases("a", "x*") == "sidecar:{a}:leases:x%2A"  # only the provider's own is a bare *
    assert keys.leases("a", PROVIDER_SCOPE) == "sidecar:{a}:leases:*"


def test_every_key_of_a_provider_carries_its_hash_tag_under_the_prefix() -> None:
    """All of one provider's keys hash to one cluster slot and start with the prefix."""
    keys = FleetKeys("bot7:")
    names = [keys.pause("replicate"), keys.aimd("replicate"), keys.tat("replicate", "create"),
             keys.leases("replicate", PROVIDER_SCOPE), keys.breaker("replicate"), keys.trial("replicate")]
    assert all(name.startswith("bot7:{replicate}:") for name in names)
    assert len(set(names)) == len(names)
