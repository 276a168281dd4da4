"""The cache of what each node's BuildKit said, by container instance, and how status and up use it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from nodefleet import fleet
from nodefleet.facts import NodeHealth
from nodefleet.state import WorkerCache

INSTANCE = "c0ffee" * 10 + "abcd 2026-11-28T10:17:02Z"
WORKERS = ("linux/arm64", "linux/arm/v7")


def test_round_trip_in_a_private_file(tmp_path: Path) -> None:
    cache = WorkerCache(tmp_path / "state")
    assert cache.get("h:22 c") is None
    cache.put("h:22 c", INSTANCE, "v0.13.2", WORKERS)
    cache.save()
    again = WorkerCache(tmp_path / "state")
    assert again.get("h:22 c") == (INSTANCE, "v0.13.2", WORKERS)
    assert stat.S_IMODE(again.path.stat().st_mode) == 0o600


def test_an_unreadable_or_odd_file_is_an_empty_cache(tmp_path: Path) -> None:
    for text in ("{not json", "[]", '{"nodes": []}', '{"nodes": {"k": {"instance": "i", "workers": []}}}'):
        (tmp_path / "workers.json").write_text(text)
        assert WorkerCache(tmp_path).get("k") is None


def test_only_the_newest_entries_are_kept(tmp_path: Path, monkeypatch: object) -> None:
    monkeypatch.setattr(WorkerCache, "LIMIT", 2)  # type: ignore[attr-defined]
    cache = WorkerCache(tmp_path)
    for index in range(3):
        cache.put(f"k{index}", f"{INSTANCE}{index}", None, WORKERS)
    cache.save()
    assert set(json.loads(cache.path.read_text())["nodes"]) <= {"k0", "k1", "k2"}
    assert len(json.loads(cache.path.read_text())["nodes"]) == 2


def test_health_fills_in_from_the_cache_only_for_the_same_instance(tmp_path: Path) -> None:
    cache = WorkerCache(tmp_path)
    asked = NodeHealth("running", "v0.13.2", WORKERS, instance=INSTANCE, asked=True)
    assert fleet._with_cache(asked, cache, "k") == asked
    assert cache.get("k") == (INSTANCE, "v0.13.2", WORKERS)
    known = NodeHealth("running", None, (), instance=INSTANCE, asked=False)
    filled = fleet._with_cache(known, cache, "k")
    assert filled.buildkit_version == "v0.13.2" and filled.native_platform == "linux/arm64"
    other = NodeHealth("running", None, (), instance="f" * 64 + " later", asked=False)
    assert fleet._with_cache(other, cache, "k").worker_platforms == ()
    stopped = NodeHealth("exited", None, (), instance=INSTANCE, asked=False)
    assert fleet._with_cache(stopped, cache, "k").worker_platforms == ()
