"""A lost or damaged nodefleet record does not make `up` recreate every node's container: the config digest it
applied is kept with the node in buildx's store too (pure planning)."""

from __future__ import annotations

from pathlib import Path

from nodefleet.buildx.argv import create_argv
from nodefleet.buildx.nodes import DIGEST_OPT, NodeSpec
from nodefleet.buildx.store import StoredNode
from nodefleet.fleet.plan import Action, NodeChange, diff_node, kept_digests
from nodefleet.state import BuilderState

IMAGE = "moby/buildkit:v0.13.2"
SPEC = NodeSpec("a", "ssh://10.0.0.1", ("linux/amd64",), IMAGE, {"cpuset-cpus": "0"}, Path("/c.toml"), "d1")


def _stored(opts: dict[str, str]) -> StoredNode:
    return StoredNode("a", "ssh://10.0.0.1", ("linux/amd64",), {"image": IMAGE, "cpuset-cpus": "0", **opts})


def test_the_digest_goes_to_buildx_with_the_node() -> None:
    argv = create_argv("fleet", SPEC, append=True)
    assert f"{DIGEST_OPT}=d1" in argv


def test_without_a_record_the_digest_in_buildxs_store_decides() -> None:
    assert diff_node(SPEC, _stored({DIGEST_OPT: "d1"}), None).action is Action.KEEP
    changed = diff_node(SPEC, _stored({DIGEST_OPT: "d0"}), None)
    assert (changed.action, changed.recreate, changed.reasons) == (Action.UPDATE, True, ("buildkitd config changed",))


def test_a_node_of_an_older_version_with_its_record_is_not_recreated() -> None:
    assert diff_node(SPEC, _stored({}), "d1").action is Action.KEEP  # the record says d1 is in place
    unknown = diff_node(SPEC, _stored({}), None)
    assert unknown.reasons == ("buildkitd config not recorded",) and unknown.recreate


def test_a_damaged_record_reads_as_missing(tmp_path: Path) -> None:
    state = BuilderState(tmp_path, "fleet")
    state.save_digests({"a": "d1"})
    assert state.load_digests() == {"a": "d1"}
    state.record_file.write_text("{not json")
    assert state.load_digests() is None
    state.record_file.unlink()
    assert state.load_digests() is None


def test_a_lost_or_incomplete_record_is_made_whole_from_the_nodes_kept() -> None:
    other = NodeSpec("b", "ssh://10.0.0.2", ("linux/arm64",), IMAGE, {}, Path("/c.toml"), "d2")
    specs = {"a": SPEC, "b": other}
    keep = NodeChange("a", Action.KEEP, (), recreate=False)
    update = NodeChange("b", Action.UPDATE, ("image changed",), recreate=True)
    assert kept_digests(None, [keep, update], specs) == {"a": "d1"}  # b is recorded once its update is applied
    # An `up` killed before it wrote the record: the node it made is kept, and recorded now.
    assert kept_digests({"b": "d0"}, [keep, update], specs) == {"a": "d1", "b": "d0"}
    assert kept_digests({"a": "d1"}, [keep], specs) == {"a": "d1"}
