"""Cache budgets (issue 15): the inventory's `cache` tables, and the gc policy `up` renders from them for each
generation of BuildKit's configuration."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nodefleet.buildx.config import applied_node_config, config_digest, current_gc, node_config, render_gc_policy
from nodefleet.errors import InventoryError
from nodefleet.fleet.plan import Member, plan_up
from nodefleet.inventory import CacheBudget, load_inventory
from nodefleet.state import BuilderState

HOSTS = """
[[hosts]]
name = "pi"
address = "10.231.0.99"
cache = { max_size = "2GB" }

[[hosts]]
name = "big"
address = "10.231.0.98"
cache = { max_size = "100GB", keep_for = "24h" }

[[hosts]]
name = "plain"
address = "10.231.0.97"
"""


def inventory_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(inventory_text(tmp_path, text))
    return caught.value.problems


def test_a_hosts_budget_takes_what_it_leaves_unset_from_the_defaults(tmp_path: Path) -> None:
    text = '[defaults]\ncache = { max_size = "20GB", min_free = "5GB", keep_for = "168h" }\n' + HOSTS
    pi, big, plain = load_inventory(inventory_text(tmp_path, text)).hosts
    assert pi.cache == CacheBudget(2 * 1000**3, 5 * 1000**3, 168 * 3600)
    assert big.cache == CacheBudget(100 * 1000**3, 5 * 1000**3, 24 * 3600)
    assert plain.cache == CacheBudget(20 * 1000**3, 5 * 1000**3, 168 * 3600)


def test_no_budget_anywhere_keeps_buildkits_defaults(tmp_path: Path) -> None:
    inventory = load_inventory(inventory_text(tmp_path, HOSTS))
    assert not inventory.hosts[2].cache
    assert not CacheBudget()


@pytest.mark.parametrize(
    ("cache", "key", "says"),
    [
        ('{ max_size = "20 gigs" }', "defaults.cache.max_size", "not a size"),
        ('{ min_free = "-5GB" }', "defaults.cache.min_free", "not a size"),
        ('{ min_free = "0B" }', "defaults.cache.min_free", "more than nothing"),
        ('{ keep_for = "1 week" }', "defaults.cache.keep_for", "not a duration"),
        ("{ keep_for = 1.5 }", "defaults.cache.keep_for", "must be a string"),
        ("{ max_size = true }", "defaults.cache.max_size", "must be a string"),
        ('{ max_sise = "1GB" }', "defaults.cache", "max_sise"),
        ('"20GB"', "defaults.cache", "table"),
    ],
)
def test_a_bad_budget_is_one_line_naming_the_key(tmp_path: Path, cache: str, key: str, says: str) -> None:
    (line,) = problems(tmp_path, f"[defaults]\ncache = {cache}\n" + HOSTS)
    assert f"inventory.toml: {key}" in line and says in line and "\n" not in line


def test_a_hosts_bad_budget_names_the_host(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, HOSTS.replace('max_size = "2GB"', 'max_size = "2XB"'))
    assert "hosts[0] (pi).cache.max_size" in line


def test_a_budget_beside_the_users_own_buildkitd_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bk.toml").write_text("debug = true\n")
    (line,) = problems(tmp_path, '[defaults]\nbuildkitd_config = "bk.toml"\n' + HOSTS)
    assert "defaults.buildkitd_config" in line and "pi, big" in line


def _policy(budget: CacheBudget, current: bool) -> dict[str, object]:
    worker = tomllib.loads(render_gc_policy(budget, current))["worker"]["oci"]
    assert worker["gc"] is True
    return worker


def test_before_buildkit_017_the_budget_is_keepbytes_rules() -> None:
    worker = _policy(CacheBudget(2_000_000_000, 5_000_000_000, 86400), current=False)
    assert worker["gcpolicy"] == [{"keepDuration": 86400}, {"all": True, "keepBytes": 2_000_000_000}]


def test_from_buildkit_017_the_budget_is_max_used_and_min_free_space() -> None:
    worker = _policy(CacheBudget(2_000_000_000, 5_000_000_000, 86400), current=True)
    assert worker["gcpolicy"] == [
        {"keepDuration": 86400},
        {"all": True, "maxUsedSpace": 2_000_000_000, "minFreeSpace": 5_000_000_000},
    ]
    assert "keepBytes" not in str(worker)


@pytest.mark.parametrize("current", [False, True])
def test_a_budget_of_time_alone_keeps_buildkits_own_cap(current: bool) -> None:
    (_, cap) = _policy(CacheBudget(keep_for=3600), current)["gcpolicy"]  # type: ignore[misc]
    assert cap == ({"all": True, "maxUsedSpace": "10%"} if current else {"all": True, "keepBytes": "10%"})


def test_min_free_alone_before_017_caps_at_buildkits_default() -> None:
    (cap,) = _policy(CacheBudget(min_free=5_000_000_000), False)["gcpolicy"]  # type: ignore[misc]
    assert cap == {"all": True, "keepBytes": "10%"}


VERSIONS = [("v0.13.2", False), ("v0.16.0", False), ("v0.17.0", True), ("v0.26.2", True), ("v1.0.0", True)]
ODD_VERSIONS = [("0.17.3+ds1", True), ("v0.13.2-debian", False), (None, False), ("", False), ("37657a1", False)]


@pytest.mark.parametrize(("version", "current"), [*VERSIONS, *ODD_VERSIONS])
def test_the_generation_comes_from_the_buildkit_version(version: str | None, current: bool) -> None:
    assert current_gc(version) is current


def test_up_writes_a_config_for_each_budgeted_node_and_a_changed_budget_changes_its_digest(tmp_path: Path) -> None:
    text = '[registries."10.231.0.1:5443"]\nca_file = "ca.crt"\n' + HOSTS
    (tmp_path / "ca.crt").write_text("CA")
    inventory = load_inventory(inventory_text(tmp_path, text))
    state = BuilderState(tmp_path / "state", inventory.builder)
    pi, big, plain = inventory.hosts
    path = node_config(inventory, state, pi, "v0.13.2")
    assert path == state.node_config("pi") and applied_node_config(state, pi) == path
    assert path is not None and (path.stat().st_mode & 0o777) == 0o600
    document = tomllib.loads(path.read_text())
    assert "10.231.0.1:5443" in document["registry"]  # the registries' settings stay with the budget
    assert document["worker"]["oci"]["gcpolicy"] == [{"all": True, "keepBytes": 2_000_000_000}]
    assert node_config(inventory, state, plain, "v0.13.2") == state.buildkitd_config  # no budget: the builder's
    members = [Member(host, "linux/amd64", True, (node_config(inventory, state, host, None), "")) for host in (pi, big)]
    _, specs = plan_up(members, None, {}, None, "")
    assert specs["pi"].buildkitd_config == state.node_config("pi")
    smaller = load_inventory(inventory_text(tmp_path, text.replace('"2GB"', '"1GB"')))

    before = config_digest(path)
    node_config(smaller, state, smaller.hosts[0], "v0.13.2")
    assert config_digest(path) != before
    state.forget()
    assert not path.exists()
