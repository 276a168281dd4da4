"""`nodefleet bake`'s pure parts: the command line, the resolved definition into jobs, the argv of one job, and
spreading a platform's jobs over its nodes by capacity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodefleet.build.bakeargs import parse_bake_request, split_bake_line
from nodefleet.build.bakefile import BakeJob, check_targets, groups, job_argv, parse_definition, plan_jobs
from nodefleet.build.spread import Capacity, default_max_jobs, spread
from nodefleet.errors import UsageError

AMD, ARM, ARMV7 = "linux/amd64", "linux/arm64", "linux/arm/v7"

PRINTED = {
    "group": {"default": {"targets": ["app", "api", "tool", "solo"]}},
    "target": {
        "base": {"context": ".", "dockerfile": "base.Dockerfile", "platforms": [AMD, ARM]},
        "app": {
            "context": "app",
            "contexts": {"base": "target:base", "assets": "../assets", "alpine": "docker-image://alpine:3"},
            "args": {"GREETING": "hi"},
            "tags": ["reg:5000/app:1", "reg:5000/app:latest"],
            "platforms": [AMD, ARM, ARMV7],
        },
        "api": {"context": "api", "contexts": {"base": "target:base"}, "tags": ["reg:5000/api:1"], "platforms": [ARM]},
        "tool": {"context": "tool", "tags": ["reg:5000/tool:1"], "platforms": [ARM], "output": ["type=local,dest=out"]},
        "solo": {"context": "https://github.com/x/y.git", "tags": ["reg:5000/solo:1"]},
    },
}


def _definition() -> object:
    return parse_definition(json.dumps(PRINTED), Path("/work/project"))


def test_the_definition_is_what_buildx_printed_with_local_paths_made_absolute() -> None:
    definition = parse_definition(json.dumps(PRINTED), Path("/work/project"))
    assert definition.requested == ("app", "api", "tool", "solo")
    assert definition.targets["app"].depends == ("base",)
    app = definition.document["target"]["app"]
    assert app["context"] == "/work/project/app"
    assert app["contexts"] == {"base": "target:base", "assets": "/work/assets", "alpine": "docker-image://alpine:3"}
    assert definition.document["target"]["solo"]["context"] == "https://github.com/x/y.git"


def test_targets_sharing_a_dependency_are_built_together() -> None:
    definition = parse_definition(json.dumps(PRINTED), Path("/p"))
    assert groups(definition) == [("app", "api"), ("tool",), ("solo",)]


def test_jobs_are_one_per_group_and_platform() -> None:
    definition = parse_definition(json.dumps(PRINTED), Path("/p"))
    jobs = plan_jobs(definition, (), (AMD, ARM))
    assert jobs == [
        BakeJob(("app",), AMD),
        BakeJob(("app", "api"), ARM),
        BakeJob(("app",), ARMV7),
        BakeJob(("tool",), ARM),
        BakeJob(("solo",), AMD),  # no platforms of its own: every platform of a healthy node
        BakeJob(("solo",), ARM),
    ]
    assert plan_jobs(definition, (ARM,), (AMD,))[:2] == [BakeJob(("app", "api"), ARM), BakeJob(("tool",), ARM)]


def test_outputs_several_nodes_cannot_make_are_refused_and_a_push_needs_a_name() -> None:
    definition = parse_definition(json.dumps(PRINTED), Path("/p"))
    jobs = plan_jobs(definition, (), (AMD, ARM))
    check_targets(definition, jobs, push=True, load=False)
    with pytest.raises(UsageError, match="bake target app: --load cannot be made from 3 platforms"):
        check_targets(definition, jobs, push=False, load=True)
    unnamed = {"group": {}, "target": {"x": {"context": ".", "platforms": [AMD]}}}
    nameless = parse_definition(json.dumps(unnamed), Path("/p"))
    with pytest.raises(UsageError, match="bake target x: pushing needs an image name"):
        check_targets(nameless, plan_jobs(nameless, (), ()), push=True, load=False)


def test_a_jobs_argv_pushes_each_target_by_digest_and_splits_local_folders() -> None:
    definition = parse_definition(json.dumps(PRINTED), Path("/p"))
    jobs = plan_jobs(definition, (), (AMD, ARM))
    counts = {name: sum(1 for job in jobs if name in job.targets) for name in definition.requested}
    argv = job_argv(
        "/tmp/def.json",
        "fleet--arm64-2",
        BakeJob(("app", "api"), ARM),
        definition,
        push=True,
        load=False,
        cache_ref="reg:5000/cache",
        passthrough=("--no-cache",),
        platforms_of=counts,
        metadata_file="/tmp/m.json",
        progress="plain",
    )
    assert argv[:12] == [
        "docker", "buildx", "bake", "--builder", "fleet--arm64-2", "--file", "/tmp/def.json", "--progress", "plain",
        "--metadata-file", "/tmp/m.json", "--no-cache",
    ]  # fmt: skip
    sets = [argv[i + 1] for i, word in enumerate(argv) if word == "--set"]
    assert sets == [
        "*.platform=linux/arm64",
        "app.output=type=image,name=reg:5000/app,push-by-digest=true,name-canonical=true,push=true",
        "app.tags=",
        "app.cache-from=type=registry,ref=reg:5000/cache:app-linux-arm64",
        "app.cache-to=type=registry,ref=reg:5000/cache:app-linux-arm64,mode=max",
        "api.output=type=image,name=reg:5000/api,push-by-digest=true,name-canonical=true,push=true",
        "api.tags=",
        "api.cache-from=type=registry,ref=reg:5000/cache:api-linux-arm64",
        "api.cache-to=type=registry,ref=reg:5000/cache:api-linux-arm64,mode=max",
    ]
    assert argv[-2:] == ["app", "api"]
    tool = job_argv(
        "/d", "b", BakeJob(("tool",), ARM), definition, push=False, load=False, cache_ref=None, passthrough=(),
        platforms_of={"tool": 2}, metadata_file="/m", progress="plain",
    )  # fmt: skip
    assert "tool.output=type=local,dest=out/linux_arm64" in tool


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-f", "a.hcl", "--file=b.hcl", "--set", "*.args.X=1", "app", "api"], {"files": ("a.hcl", "b.hcl")}),
        (
            ["--push", "--no-cache", "--provenance", "false", "app"],
            {"push": True, "passthrough": ("--no-cache", "--provenance", "false")},
        ),
        (
            ["--load", "--metadata-file", "m.json", "--progress=quiet"],
            {"load": True, "metadata_file": "m.json", "progress": "quiet"},
        ),
        (["-fdocker-compose.yml"], {"files": ("docker-compose.yml",)}),
    ],
)  # fmt: skip
def test_parse_bake_request(args: list[str], expected: dict[str, object]) -> None:
    request = parse_bake_request(args)
    for key, value in expected.items():
        assert getattr(request, key) == value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--builder", "x"], "chooses the builders"),
        (["--print"], "docker buildx bake --print"),
        (["--push", "--load"], "--push and --load at once"),
        (["-f"], "-f needs a value"),
    ],
)
def test_bake_request_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_bake_request(args)


def test_split_keeps_bake_values_with_their_options() -> None:
    own, rest = split_bake_line(["-i", "inv.toml", "--set", "--json", "-f", "--platform", "--json", "app"])
    assert own == ["-i", "inv.toml", "--json"]
    assert rest == ["--set", "--json", "-f", "--platform", "app"]


def test_spread_in_proportion_to_capacity() -> None:
    nodes = [Capacity("a", 1.0, 4), Capacity("b", 1.0, 4)]
    jobs = [f"t{i}" for i in range(6)]
    assigned = spread(jobs, nodes, {})
    assert sorted(assigned.values()).count("a") == 3
    fast = spread(jobs, [Capacity("a", 2.0, 4), Capacity("b", 1.0, 4)], {})
    assert list(fast.values()).count("a") == 4


def test_a_job_goes_back_to_its_last_node_while_the_balance_allows() -> None:
    nodes = [Capacity("a", 1.0, 4), Capacity("b", 1.0, 4)]
    jobs = ["t0", "t1", "t2", "t3"]
    last = dict.fromkeys(jobs, "b")
    assigned = spread(jobs, nodes, last)
    assert [assigned[job] for job in jobs] == ["b", "b", "a", "a"]  # b's fair share is 2
    assert spread(["t0"], nodes, {"t0": "gone"}) == {"t0": "a"}


def test_default_max_jobs() -> None:
    assert (default_max_jobs(None), default_max_jobs(1), default_max_jobs(8)) == (2, 2, 16)
