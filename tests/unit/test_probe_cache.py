"""The cache of what nodes and hosts answered (BuildKit by container instance, the machine by boot id), and how
status and up use it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from nodefleet.host.cache import ProbeCache
from nodefleet.host.facts import HostFacts, NodeHealth, parse_keys
from nodefleet.host.facts import parse_facts as parse_fact_keys
from nodefleet.host.probe import health_with_cache, machine_with_cache

INSTANCE = "c0ffee" * 10 + "abcd 2026-11-28T10:17:02Z"
WORKERS = ("linux/arm64", "linux/arm/v7")


def test_round_trip_in_a_private_file(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path / "state")
    assert cache.get("h:22 c") is None
    cache.put("h:22 c", INSTANCE, "v0.13.2", WORKERS)
    cache.save()
    again = ProbeCache(tmp_path / "state")
    assert again.get("h:22 c") == (INSTANCE, "v0.13.2", WORKERS)
    assert stat.S_IMODE(again.path.stat().st_mode) == 0o600


def test_an_unreadable_or_odd_file_is_an_empty_cache(tmp_path: Path) -> None:
    for text in ("{not json", "[]", '{"nodes": []}', '{"nodes": {"k": {"instance": "i", "workers": []}}}'):
        (tmp_path / "probes.json").write_text(text)
        assert ProbeCache(tmp_path).get("k") is None


def test_only_the_newest_entries_are_kept(tmp_path: Path, monkeypatch: object) -> None:
    monkeypatch.setattr(ProbeCache, "LIMIT", 2)  # type: ignore[attr-defined]
    cache = ProbeCache(tmp_path)
    for index in range(3):
        cache.put(f"k{index}", f"{INSTANCE}{index}", None, WORKERS)
    cache.save()
    assert set(json.loads(cache.path.read_text())["nodes"]) <= {"k0", "k1", "k2"}
    assert len(json.loads(cache.path.read_text())["nodes"]) == 2


def test_health_fills_in_from_the_cache_only_for_the_same_instance(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path)
    asked = NodeHealth("running", "v0.13.2", WORKERS, instance=INSTANCE, asked=True)
    assert health_with_cache(asked, cache, "k") == asked
    assert cache.get("k") == (INSTANCE, "v0.13.2", WORKERS)
    known = NodeHealth("running", None, (), instance=INSTANCE, asked=False)
    filled = health_with_cache(known, cache, "k")
    assert filled.buildkit_version == "v0.13.2" and filled.native_platform == "linux/arm64"
    other = NodeHealth("running", None, (), instance="f" * 64 + " later", asked=False)
    assert health_with_cache(other, cache, "k").worker_platforms == ()
    stopped = NodeHealth("exited", None, (), instance=INSTANCE, asked=False)
    assert health_with_cache(stopped, cache, "k").worker_platforms == ()


def parse_facts(output: str) -> HostFacts:
    return parse_fact_keys(parse_keys(output))


BOOT = "0f3c1d2e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"


def test_a_machine_is_filled_in_only_for_the_boot_it_was_read_in(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path)
    reported = parse_facts(f"boot_id={BOOT}\nmachine=aarch64\nuserland_bits=32\nos=x\n")
    assert machine_with_cache(reported, cache, "h:22") == reported
    cache.save()
    again = ProbeCache(tmp_path)
    assert again.machine("h:22") == (BOOT, "aarch64", 32)
    same_boot = machine_with_cache(parse_facts(f"boot_id={BOOT}\nos=x\n"), again, "h:22")
    assert same_boot.machine == "aarch64" and same_boot.platform == "linux/arm/v7"
    rebooted = machine_with_cache(parse_facts(f"boot_id={BOOT[:-1]}0\nos=x\n"), again, "h:22")
    assert rebooted.machine == "" and rebooted.platform is None
    assert machine_with_cache(parse_facts(f"boot_id={BOOT}\n"), again, "other:22").platform is None


def test_an_unchanged_answer_does_not_rewrite_the_file(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path)
    cache.put_machine("h:22", BOOT, "x86_64", 64)
    cache.save()
    written = cache.path.stat().st_mtime_ns
    again = ProbeCache(tmp_path)
    again.put_machine("h:22", BOOT, "x86_64", 64)
    again.save()
    assert again.path.stat().st_mtime_ns == written


def test_an_entry_with_an_odd_time_is_kept_last_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "probes.json").write_text('{"nodes": {"k": {"instance": "i", "workers": ["linux/amd64"], "at": "x"}}}')
    cache = ProbeCache(tmp_path)
    assert cache.get("k") == ("i", None, ("linux/amd64",))
    cache.put_machine("h:22", BOOT, "x86_64", 64)
    cache.save()
    assert set(json.loads(cache.path.read_text())["nodes"]) == {"k"}
