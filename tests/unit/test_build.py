"""`nodefleet build`'s pure parts: argument sorting, node choice, argv, reading buildx's output."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nodefleet.build import index as build_index
from nodefleet.build.argv import platform_argv, progress_mode, repository
from nodefleet.build.cmdline import (
    BuildRequest,
    Output,
    check_outputs,
    format_output,
    parse_output,
    parse_request,
    split_command_line,
)
from nodefleet.build.output import FailureKind, StepCounter, classify_failure, error_text, index_digests, merge_metadata
from nodefleet.build.report import BuildReport, PlatformResult
from nodefleet.build.routing import Choice, Health, NodeView, emulation_order, hosts_to_check, retry_node, select_nodes
from nodefleet.buildx.argv import imagetools_create_argv
from nodefleet.errors import UsageError
from nodefleet.host.facts import Facts, parse_probe, probe_script
from nodefleet.host.health import health_problem
from nodefleet.runner import LocalResult
from nodefleet.state import BuilderState

AMD = "linux/amd64"
ARM = "linux/arm64"
V7 = "linux/arm/v7"
V6 = "linux/arm/v6"

# ---------------------------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("args", "own", "rest"),
    [
        (["-i", "inv.toml", "-t", "a:1", "."], ["-i", "inv.toml"], ["-t", "a:1", "."]),
        (["--platform", "linux/arm64", "--push", "."], ["--platform", "linux/arm64"], ["--push", "."]),
        (["--platform=linux/arm64", "--json", "ctx"], ["--platform=linux/arm64", "--json"], ["ctx"]),
        # a buildx value that looks like a nodefleet option stays buildx's
        (["--label", "--json", "."], [], ["--label", "--json", "."]),
        (["-f", "-i.Dockerfile", "."], [], ["-f", "-i.Dockerfile", "."]),
        # an attached short value is one token
        (["-fDockerfile.i", "-iinv.toml", "."], ["-iinv.toml"], ["-fDockerfile.i", "."]),
        (
            ["--cache-ref", "reg/app/cache", "--allow-emulation", "."],
            ["--cache-ref", "reg/app/cache", "--allow-emulation"],
            ["."],
        ),
        (["--parallel", "2", "-qt", "x:1", "."], ["--parallel", "2"], ["-qt", "x:1", "."]),
        (["--", "--json"], [], ["--", "--json"]),
        (["--build-arg", "A=1", "--no-cache", "."], [], ["--build-arg", "A=1", "--no-cache", "."]),
    ],
)
def test_split_command_line(args: list[str], own: list[str], rest: list[str]) -> None:
    assert split_command_line(args) == (own, rest)


def test_request_sorts_what_nodefleet_handles_and_passes_the_rest_untouched() -> None:
    request = parse_request(
        [
            "-t",
            "reg:5443/app:1",
            "--tag=reg:5443/app:latest",
            "--build-arg",
            "A=1",
            "-f",
            "Dockerfile.x",
            "--secret",
            "id=s,src=/tmp/s",
            "--push",
            "--metadata-file",
            "meta.json",
            "--progress=plain",
            "--target",
            "final",
            ".",
        ],
        platforms=("arm64", "linux/amd64,linux/arm/v7"),
    )
    assert request.context == "."
    assert request.tags == ("reg:5443/app:1", "reg:5443/app:latest")
    assert request.push and request.image_names == request.tags
    assert request.platforms == (ARM, AMD, V7)
    assert request.metadata_file == "meta.json"
    assert request.progress == "plain"
    assert request.passthrough == (
        "--build-arg",
        "A=1",
        "-f",
        "Dockerfile.x",
        "--secret",
        "id=s,src=/tmp/s",
        "--target",
        "final",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no build context"),
        (["a", "b"], "several build contexts"),
        (["--builder", "x", "."], "drop --builder"),
        (["--push", "."], "needs an image name"),
        (["--tag"], "needs a value"),
        (["-o", "dest=out", "."], "type is required"),
        (["--platform", "linux/arm64!", "."], "--platform"),
    ],
)
def test_request_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_request(args)


def test_cache_ref_is_a_repository_and_excludes_cache_to() -> None:
    assert parse_request(["."], cache_ref="10.231.0.1:5443/lab/cache").cache_ref == "10.231.0.1:5443/lab/cache"
    for bad in ("reg/cache:v1", "reg/cache\n", "reg\n/cache", "Reg/Cache"):
        with pytest.raises(UsageError, match="without tag"):
            parse_request(["."], cache_ref=bad)
    with pytest.raises(UsageError, match="drop --cache-to"):
        parse_request(["--cache-to", "type=inline", "."], cache_ref="reg/cache")
    # importing more caches is fine
    assert parse_request(["--cache-from", "reg/other", "."], cache_ref="reg/cache").passthrough == (
        "--cache-from",
        "reg/other",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-", Output("tar", {"dest": "-"})),
        ("./out", Output("local", {"dest": "./out"})),
        ("type=registry", Output("registry", {})),
        ("type=image,name=reg/a:1,push=true", Output("image", {"name": "reg/a:1", "push": "true"})),
        ('type=image,"name=reg/a:1,reg/a:2",push=true', Output("image", {"name": "reg/a:1,reg/a:2", "push": "true"})),
        ("type=oci,dest=out.tar", Output("oci", {"dest": "out.tar"})),
    ],
)
def test_parse_output(value: str, expected: Output) -> None:
    output = parse_output(value)
    assert output == expected
    assert parse_output(format_output(output)) == output


def test_output_push_and_names() -> None:
    assert parse_output('type=image,"name=r/a:1,r/a:2",push=true').names == ("r/a:1", "r/a:2")
    assert parse_output("type=registry").push
    assert not parse_output("type=image,name=r/a").push
    assert not parse_output("type=docker").push
    request = parse_request(['--output=type=image,"name=r/a:1,r/a:2",push=true', "."])
    assert request.push and request.image_names == ("r/a:1", "r/a:2")
    assert parse_request(["--push=false", "-t", "a", "."]).push is False
    assert parse_request(["--load", "-t", "a", "."]).outputs == (Output("docker"),)


@pytest.mark.parametrize(
    ("reference", "repo"),
    [
        ("reg:5443/lab/app:1.0", "reg:5443/lab/app"),
        ("reg:5443/lab/app", "reg:5443/lab/app"),
        ("app@sha256:abc", "app"),
        ("reg/app:1@sha256:abc", "reg/app"),
    ],
)
def test_repository(reference: str, repo: str) -> None:
    assert repository(reference) == repo


# ---------------------------------------------------------------------------------------------- layout and argv


@pytest.mark.parametrize(
    ("args", "platforms", "refused"),
    [
        (["--push", "-t", "a", "."], 3, None),
        (["."], 3, None),
        (["-o", "type=local,dest=out", "."], 3, None),
        (["-o", "type=cacheonly", "."], 3, None),
        (["--load", "."], 1, None),
        (["-o", "-", "."], 1, None),
        (["--load", "."], 2, "--load cannot be made from 2 platforms"),
        (["-o", "type=oci,dest=o.tar", "."], 2, "type oci"),
        (["-o", "-", "."], 3, "type tar"),
        (["--iidfile", "id", "."], 2, "--iidfile with several platforms needs --push"),
        (["--iidfile", "id", "--push", "-t", "r/a", "."], 2, None),
    ],
)
def test_check_outputs(args: list[str], platforms: int, refused: str | None) -> None:
    request = parse_request(args)
    if refused is None:
        check_outputs(request, platforms)
    else:
        with pytest.raises(UsageError, match=re.escape(refused)):
            check_outputs(request, platforms)


def test_platform_argv_pushes_by_digest_with_a_cache_per_platform() -> None:
    request = parse_request(
        ["-t", "reg/app:1", "-t", "reg/app:latest", "--push", "--build-arg", "A=1", "--iidfile", "id", "ctx"],
        cache_ref="reg/cache",
    )
    argv = platform_argv(request, V7, "fleet--armv7-1", platforms=3, metadata_file="/tmp/m.json", progress="plain")
    assert argv == [
        "docker",
        "buildx",
        "build",
        "--builder",
        "fleet--armv7-1",
        "--platform",
        V7,
        "--progress",
        "plain",
        "--build-arg",
        "A=1",
        "--output",
        "type=image,name=reg/app,push-by-digest=true,name-canonical=true,push=true",
        "--cache-from",
        "type=registry,ref=reg/cache:linux-arm-v7",
        "--cache-to",
        "type=registry,ref=reg/cache:linux-arm-v7,mode=max",
        "--metadata-file",
        "/tmp/m.json",
        "--",
        "ctx",
    ]


def test_platform_argv_keeps_output_attributes_and_splits_local_folders() -> None:
    request = parse_request(["-o", "type=image,name=r/a:1,push=true,compression=zstd", "."])
    argv = platform_argv(request, ARM, "b", platforms=2, metadata_file="m", progress="plain")
    assert "type=image,compression=zstd,name=r/a,push-by-digest=true,name-canonical=true,push=true" in argv
    local = parse_request(["-o", "type=local,dest=out", "."])
    assert "type=local,dest=out/linux_arm64" in platform_argv(
        local, ARM, "b", platforms=2, metadata_file="m", progress="plain"
    )
    assert "type=local,dest=out" in platform_argv(local, ARM, "b", platforms=1, metadata_file="m", progress="plain")


def test_platform_argv_single_platform_passes_tags_load_and_iidfile() -> None:
    request = parse_request(["-t", "app:dev", "--load", "--iidfile", "id.txt", "."])
    argv = platform_argv(request, AMD, "b--amd64-1", platforms=1, metadata_file="m", progress="plain")
    assert argv[-2:] == ["--", "."]
    assert argv[argv.index("--tag") : argv.index("--tag") + 2] == ["--tag", "app:dev"]
    assert "type=docker" in argv
    assert "--iidfile" in argv


def test_imagetools_create_argv() -> None:
    assert imagetools_create_argv("b", ["r/a:1", "r/a:2"], ["r/a@sha256:1", "r/a@sha256:2"]) == [
        "docker",
        "buildx",
        "imagetools",
        "create",
        "--builder",
        "b",
        "--progress",
        "plain",
        "--tag",
        "r/a:1",
        "--tag",
        "r/a:2",
        "r/a@sha256:1",
        "r/a@sha256:2",
    ]


@pytest.mark.parametrize(
    ("progress", "builds", "expected"),
    [
        (None, 3, ("plain", False)),
        ("auto", 1, ("plain", False)),
        ("tty", 1, ("tty", True)),
        ("tty", 2, ("plain", False)),
        ("quiet", 2, ("quiet", False)),
        ("rawjson", 2, ("rawjson", False)),
    ],
)
def test_progress_mode(progress: str | None, builds: int, expected: tuple[str, bool]) -> None:
    assert progress_mode(BuildRequest(".", progress=progress), builds) == expected


# ---------------------------------------------------------------------------------------------- choosing nodes

H, F, P, U = Health.HEALTHY, Health.FAILED, Health.PENDING, Health.UNCHECKED


def view(
    name: str, order: int, platform: str | None, health: Health = H, last_used: float = 0.0, **kw: object
) -> NodeView:
    workers = kw.pop("workers", (platform,) if platform else ())
    return NodeView(
        name,
        order,
        (platform,) if platform else (),
        health=health,
        last_used=last_used,
        workers=tuple(workers),  # type: ignore[arg-type]
        error=kw.pop("error", None),  # type: ignore[arg-type]
    )


def fleet(arm1: Health = H, arm2: Health = H, *, used1: float = 0.0, used2: float = 0.0) -> list[NodeView]:
    return [
        view("amd64-1", 0, AMD, workers=(AMD, "linux/386", ARM, V7, V6)),
        view("arm64-1", 1, ARM, arm1, used1, workers=(ARM, V7, V6)),
        view("arm64-2", 2, ARM, arm2, used2, workers=(ARM, V7, V6)),
        view("armv7-1", 3, V7, workers=(V7, V6)),
    ]


def chosen(selection: object) -> dict[str, tuple[str, bool]]:
    return {c.platform: (c.node, c.emulated) for c in selection.choices}  # type: ignore[attr-defined]


def test_each_platform_on_its_native_node() -> None:
    selection = select_nodes(fleet(), [AMD, ARM, V7], allow_emulation=False, grace_over=False)
    assert chosen(selection) == {AMD: ("amd64-1", False), ARM: ("arm64-1", False), V7: ("armv7-1", False)}
    assert not selection.refused and not selection.pending


def test_least_recently_used_node_of_a_platform_goes_next() -> None:
    assert chosen(select_nodes(fleet(used1=20, used2=10), [ARM], allow_emulation=False, grace_over=False)) == {
        ARM: ("arm64-2", False)
    }
    assert chosen(select_nodes(fleet(used1=10, used2=20), [ARM], allow_emulation=False, grace_over=False)) == {
        ARM: ("arm64-1", False)
    }
    # ties go to inventory order
    assert chosen(select_nodes(fleet(), [ARM], allow_emulation=False, grace_over=False))[ARM][0] == "arm64-1"


def test_retry_goes_to_another_healthy_node_of_the_platform() -> None:
    native = Choice(ARM, "arm64-1")
    assert retry_node(fleet(), native, {"arm64-1"}) == "arm64-2"
    assert retry_node(fleet(arm2=F), native, {"arm64-1"}) is None
    assert retry_node(fleet(arm1=F), Choice(AMD, "amd64-1"), {"amd64-1"}) is None  # never emulated on a retry
    emulated = Choice(V6, "armv7-1", emulated=True)
    assert retry_node(fleet(), emulated, {"armv7-1"}) == "arm64-1"


def test_down_node_is_routed_around() -> None:
    selection = select_nodes(fleet(arm1=F), [ARM], allow_emulation=False, grace_over=False)
    assert chosen(selection) == {ARM: ("arm64-2", False)}


def test_a_preferred_node_that_has_not_answered_is_waited_for_until_the_grace_ends() -> None:
    assert select_nodes(fleet(arm1=P), [ARM], allow_emulation=False, grace_over=False).pending
    selection = select_nodes(fleet(arm1=P), [ARM], allow_emulation=False, grace_over=True)
    assert chosen(selection) == {ARM: ("arm64-2", False)}
    # the preferred node answering healthy needs no grace
    assert chosen(select_nodes(fleet(arm2=P), [ARM], allow_emulation=False, grace_over=False)) == {
        ARM: ("arm64-1", False)
    }


def test_a_platform_whose_only_nodes_are_still_checking_waits_even_after_the_grace() -> None:
    assert select_nodes(fleet(arm1=P, arm2=P), [ARM], allow_emulation=False, grace_over=True).pending


def test_a_platform_with_no_host_is_refused_naming_the_hosts_and_how_to_add_one() -> None:
    selection = select_nodes(fleet(), [AMD, "linux/riscv64"], allow_emulation=False, grace_over=False)
    ((platform, message),) = selection.refused
    assert platform == "linux/riscv64"
    assert "no host in the inventory builds it natively" in message
    assert "amd64-1 linux/amd64" in message
    assert "[[hosts]]" in message and "nodefleet up" in message and "--allow-emulation" in message


def test_a_platform_whose_nodes_are_all_down_is_refused_with_their_state() -> None:
    views = fleet(arm1=F, arm2=F)
    views[1] = NodeView("arm64-1", 1, (ARM,), health=F, error="ssh: timed out")
    selection = select_nodes(views, [ARM], allow_emulation=False, grace_over=True)
    ((platform, message),) = selection.refused
    assert platform == ARM
    assert "arm64-1 failed (ssh: timed out)" in message and "arm64-2 failed" in message
    assert not selection.choices


def test_emulation_only_when_asked_preferring_the_same_architecture() -> None:
    selection = select_nodes(fleet(), [V6], allow_emulation=True, grace_over=True)
    assert chosen(selection) == {V6: ("armv7-1", True)}
    assert select_nodes(fleet(), [V6], allow_emulation=False, grace_over=True).refused


def test_emulation_spreads_over_nodes_and_needs_a_worker_listing_the_platform() -> None:
    views = [
        view("amd64-1", 0, AMD, workers=(AMD, ARM, V7)),
        view("amd64-2", 1, AMD, workers=(AMD, ARM, V7)),
    ]
    selection = select_nodes(views, [ARM, V7], allow_emulation=True, grace_over=True)
    assert chosen(selection) == {ARM: ("amd64-1", True), V7: ("amd64-2", True)}
    refused = select_nodes(views, ["linux/riscv64"], allow_emulation=True, grace_over=True)
    assert "no healthy node can emulate it" in refused.refused[0][1]


def test_emulation_order_ranks_relatives_first() -> None:
    order = [v.name for v in emulation_order(fleet(), "linux/arm/v5", {})]
    assert order == []  # no worker lists v5
    order = [v.name for v in emulation_order(fleet(), V6, {"armv7-1": 1})]
    assert order == ["armv7-1", "arm64-1", "arm64-2", "amd64-1"]


def test_default_platforms_are_those_of_healthy_nodes_and_a_dead_platform_is_skipped() -> None:
    views = fleet()
    views[3] = view("armv7-1", 3, V7, F, error="ssh: timed out")
    selection = select_nodes(views, [], allow_emulation=False, grace_over=True)
    assert chosen(selection) == {AMD: ("amd64-1", False), ARM: ("arm64-1", False)}
    assert not selection.refused
    assert selection.skipped == ("linux/arm/v7 skipped: armv7-1 failed (ssh: timed out)",)


def test_default_platforms_wait_for_a_host_whose_platform_is_unknown() -> None:
    views = [*fleet(), NodeView("new-1", 4, (), health=P)]
    assert select_nodes(views, [], allow_emulation=False, grace_over=True).pending


def test_nothing_healthy_is_refused() -> None:
    views = [view("amd64-1", 0, AMD, F)]
    selection = select_nodes(views, [], allow_emulation=False, grace_over=True)
    assert selection.refused and "no healthy node" in selection.refused[0][1]


def test_hosts_to_check() -> None:
    views = [view("amd64-1", 0, AMD, U), view("arm64-1", 1, ARM, U), NodeView("x", 2, ())]
    assert hosts_to_check(views, [ARM], allow_emulation=False) == ["arm64-1", "x"]
    assert hosts_to_check(views, [], allow_emulation=False) == ["amd64-1", "arm64-1", "x"]
    assert hosts_to_check(views, [ARM], allow_emulation=True) == ["amd64-1", "arm64-1", "x"]


# ---------------------------------------------------------------------------------------------- reading buildx

PLAIN = """\
#0 building with "fleet--arm64-1" instance using docker-container driver
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
#4 [build 1/2] FROM 10.231.0.1:5443/lab/busybox:stable@sha256:0123
#4 CACHED
#5 [build 2/2] RUN echo hi > /log
#5 CACHED
#6 [stage-1 2/2] COPY --from=build /log /log
#6 DONE 0.1s
#7 exporting to image
#7 DONE 0.2s
"""


def test_step_counter_counts_dockerfile_steps_and_cached_ones() -> None:
    counter = StepCounter()
    for line in PLAIN.splitlines():
        counter.feed(line)
    assert counter.counts == (2, 1)
    assert StepCounter().counts is None


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            'ERROR: failed to solve: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3',
            "dockerfile",
        ),
        ("ERROR: failed to solve: dockerfile parse error on line 2: unknown instruction: RUNN", "dockerfile"),
        ('ERROR: failed to solve: failed to compute cache key: "/missing": not found', "dockerfile"),
        ("ERROR: failed to solve: Unavailable: error reading from server: EOF", "infrastructure"),
        ("ERROR: failed to dial gRPC: cannot connect to the Docker daemon", "infrastructure"),
        ("ERROR: Error response from daemon: No such container: buildx_buildkit_arm64-1", "infrastructure"),
        ("ERROR: failed to solve: rpc error: code = Unavailable desc = connection reset by peer", "infrastructure"),
        ("ERROR: unexpected EOF", "infrastructure"),
        ("ERROR: failed to push reg/app: unauthorized", "other"),
    ],
)
def test_classify_failure(error: str, kind: str) -> None:
    assert classify_failure(error) is FailureKind(kind)


def test_a_failing_run_whose_output_mentions_connections_is_still_a_dockerfile_error() -> None:
    lines = [
        "#5 0.3 curl: (7) Failed to connect: Connection refused",
        '#5 ERROR: process "/bin/sh -c curl x" did not complete successfully: exit code: 7',
        'ERROR: failed to solve: process "/bin/sh -c curl x" did not complete successfully: exit code: 7',
    ]
    text = error_text(lines)
    assert text == lines[-1]
    assert classify_failure(text) is FailureKind.DOCKERFILE
    assert error_text(["a", "", "b"]) == "a\nb"


INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "digest": "sha256:index",
    "manifests": [
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:v7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {
            "digest": "sha256:att",
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        },
    ],
}


def test_index_digests_leave_attestations_out() -> None:
    assert index_digests(json.dumps(INDEX)) == ("sha256:index", {AMD: "sha256:amd", V7: "sha256:v7"})
    assert index_digests("not json") == (None, {})


def test_merge_metadata() -> None:
    per = {AMD: {"containerimage.digest": "sha256:a"}, ARM: {"containerimage.digest": "sha256:b"}}
    merged = merge_metadata(per, {AMD: "amd64-1", ARM: "arm64-2"}, index_digest="sha256:i", names=["r/a:1", "r/a:2"])
    assert merged["containerimage.digest"] == "sha256:i"
    assert merged["image.name"] == "r/a:1,r/a:2"
    assert merged["nodefleet.platforms"][ARM] == {"containerimage.digest": "sha256:b", "nodefleet.node": "arm64-2"}
    single = merge_metadata({AMD: {"buildx.build.ref": "x"}}, {AMD: "amd64-1"}, index_digest=None, names=[])
    assert single["buildx.build.ref"] == "x"


# The build's node check is the probe `status` runs (host/scripts/probe.sh, parsed by parse_probe) judged by
# health_problem. The probe runs here under sh against a stub `docker` that answers `docker inspect` (and, for a
# running container, BuildKit's `buildctl`) as the engine would.

WORKERS = '[{"platforms":[{"os":"linux","architecture":"amd64"}]}]'


def _stub_docker(tmp_path: Path, inspect: str) -> dict[str, str]:
    docker = tmp_path / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = inspect ]; then\n{inspect}\nfi\n'
        'if [ "$1" = exec ] && [ "$5" = info ]; then echo "BuildKit: github.com/moby/buildkit v0.13.2 abc"; fi\n'
        f'if [ "$1" = exec ] && [ "$5" = workers ]; then echo \'{WORKERS}\'; fi\n'
    )
    docker.chmod(0o755)
    return {"PATH": f"{tmp_path}:/usr/bin:/bin"}


def _node_check(tmp_path: Path, inspect: str) -> tuple[str | None, str, str | None]:
    """(container id, state, problem) as the build's check sees them: the probe's answer judged by health_problem."""
    env = _stub_docker(tmp_path, inspect)
    script = probe_script("buildx_buildkit_x", facts=Facts.NONE)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    health = parse_probe(out).health
    return health.container_id, health.state, health_problem("x", AMD, health)


@pytest.mark.parametrize(
    ("inspect", "expected"),
    [
        (f'echo "running {"a" * 64} 2026-11-28T10:17:02Z moby/buildkit:v0.13.2 "', ("a" * 64, "running", None)),
        (
            f'echo "exited {"b" * 64} 2026-11-28T10:17:02Z moby/buildkit:v0.13.2 "',
            ("b" * 64, "exited", "BuildKit container buildx_buildkit_x is exited"),
        ),
        (
            'echo "Error: No such object: buildx_buildkit_x" >&2; exit 1',
            (None, "missing", "BuildKit container buildx_buildkit_x is missing"),
        ),
        # Docker 26: an empty line on stdout, then the error on stderr.
        (
            'echo; echo "Error: No such object: buildx_buildkit_x" >&2; exit 1',
            (None, "missing", "BuildKit container buildx_buildkit_x is missing"),
        ),
    ],
)
def test_node_check_reads_the_container(
    tmp_path: Path, inspect: str, expected: tuple[str | None, str, str | None]
) -> None:
    assert _node_check(tmp_path, inspect) == expected


def test_node_check_names_an_engine_problem(tmp_path: Path) -> None:
    container, state, problem = _node_check(
        tmp_path,
        'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2\n'
        "exit 1",
    )
    assert (container, state) == (None, "unknown")
    assert problem is not None and "not running" in problem


def test_node_check_of_a_running_container_without_a_worker_or_of_another_architecture_fails() -> None:
    running = "state=running\ninstance=" + "c" * 64 + " 2026-11-28T10:17:02Z\nbuildkit=BuildKit: x v0.13.2 y\n"
    health = parse_probe(running + "workers=[]\n").health
    assert health.state == "running" and health.buildkit_version == "v0.13.2"
    assert health_problem("x", AMD, health) == "BuildKit in buildx_buildkit_x reports no worker: it cannot build"
    health = parse_probe(running + f"workers={WORKERS}\n").health
    assert health_problem("x", AMD, health) is None
    problem = health_problem("x", ARM, health)
    assert problem is not None and "runs linux/amd64 natively but the node is pinned to linux/arm64" in problem
    assert health_problem("x", AMD, None) == "BuildKit container buildx_buildkit_x was not checked"


def test_build_record_update_is_saved(tmp_path: Path) -> None:
    record = BuilderState(tmp_path / "state", "fleet").build_record
    assert record.path == tmp_path / "state" / "builders" / "fleet" / "build.json"
    assert record.load()["nodes"] == {}

    async def go() -> None:
        async with record.update() as data:
            data["nodes"]["arm64-1"] = {"last_used": 5.0}

    asyncio.run(go())
    assert record.load()["nodes"] == {"arm64-1": {"last_used": 5.0}}
    assert record.path.stat().st_mode & 0o777 == 0o600


def test_build_command_hands_everything_but_its_own_options_to_buildx() -> None:
    from nodefleet.cli import cli

    command = cli.commands["build"]
    args = [
        "-i",
        "x.toml",
        "--platform",
        "linux/arm64",
        "-fDockerfile.i",
        "--label",
        "--json",
        "-t",
        "a",
        "--json",
        ".",
    ]
    ctx = command.make_context("build", args)
    assert ctx.params["inventory_path"] == "x.toml"
    assert ctx.params["platforms"] == ("linux/arm64",)
    assert ctx.params["as_json"] is True
    assert ctx.args == ["-fDockerfile.i", "--label", "--json", "-t", "a", "."]


def test_build_report_json_keys_are_stable() -> None:
    from nodefleet.build.report import Attempt

    result = PlatformResult("linux/arm64", node="arm64-2", node_platform=ARM, status="built", seconds=1.23456)
    result.attempts = [
        Attempt("arm64-1", "failed", 0.5, "EOF", FailureKind.INFRASTRUCTURE),
        Attempt("arm64-2", "built"),
    ]
    report = BuildReport("fleet", [result], pushed=True, names=("r/a:1",), index_digest="sha256:i")
    document = report.as_json()
    assert set(document) == {
        "nodefleet_json_version",
        "command",
        "builder",
        "ok",
        "seconds",
        "platforms",
        "pushed",
        "nodes",
        "failure",
        "notes",
    }
    assert document["nodefleet_json_version"] == 1 and document["command"] == "build" and document["ok"] is True
    assert document["pushed"] == {"names": ["r/a:1"], "index_digest": "sha256:i"}
    (platform,) = document["platforms"]
    assert set(platform) == {
        "platform",
        "target",
        "node",
        "node_platform",
        "mode",
        "status",
        "seconds",
        "steps",
        "cached_steps",
        "manifest_digest",
        "pushed_digest",
        "error",
        "error_kind",
        "attempts",
    }
    assert platform["mode"] == "native" and platform["seconds"] == 1.235
    assert platform["attempts"][0] == {
        "node": "arm64-1",
        "status": "failed",
        "seconds": 0.5,
        "error": "EOF",
        "error_kind": "infrastructure",
    }
    assert json.loads(json.dumps(document)) == document


def test_unsplittable_output_is_refused_before_any_host_is_contacted(tmp_path: Path) -> None:
    from nodefleet.cli import cli

    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[hosts]]\nname = "a"\naddress = "127.0.0.1"\nport = 1\n')  # never contacted
    args = ["build", "-i", str(inventory), "--platform", "linux/amd64,linux/arm64", "-o", "type=oci,dest=x.tar", "."]
    with pytest.raises(UsageError, match="type oci cannot be made from 2 platforms"):
        cli.main(args, standalone_mode=False)


def test_retry_excludes_every_node_of_a_one_shot_iterator() -> None:
    native = Choice(ARM, "arm64-1")
    assert retry_node(fleet(), native, (name for name in ["arm64-1", "arm64-2"])) is None
    assert retry_node(fleet(), native, iter(["arm64-1"])) == "arm64-2"
    emulated = Choice(V6, "armv7-1", emulated=True)
    assert retry_node(fleet(), emulated, (name for name in ["armv7-1", "arm64-1"])) == "arm64-2"


def test_assembling_the_index_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that stops answering must not hang the build: every imagetools command runs with a finite
    timeout, at least INDEX_TIMEOUT for the create."""
    assert isinstance(build_index.INDEX_TIMEOUT, int | float)
    assert math.isfinite(build_index.INDEX_TIMEOUT) and build_index.INDEX_TIMEOUT > 0
    calls: list[tuple[list[str], object]] = []

    async def fake_run_local(argv: list[str], **kwargs: object) -> LocalResult:
        calls.append((list(argv), kwargs.get("timeout")))
        stdout = json.dumps(INDEX) if "inspect" in argv else ""
        return LocalResult(tuple(argv), 0, stdout, "", 0.0)

    monkeypatch.setattr(build_index, "run_local", fake_run_local)
    request = parse_request(["--push", "-t", "r/a:1", "."], platforms=(AMD, V7))
    results = [
        PlatformResult(AMD, node="amd64-1", status="built", metadata={"containerimage.digest": "sha256:a"}),
        PlatformResult(V7, node="armv7-1", status="built", metadata={"containerimage.digest": "sha256:b"}),
    ]
    report = BuildReport("fleet", results)
    notices: list[str] = []
    ctx = SimpleNamespace(
        request=request,
        used={"amd64-1": ("helper-amd64-1", None)},
        options=SimpleNamespace(notice=notices.append, progress=lambda _label, _line: None),
        inventory=SimpleNamespace(defaults=SimpleNamespace(command_timeout=120.0)),
    )
    asyncio.run(build_index.assemble_index(ctx, report))  # type: ignore[arg-type]
    assert [argv[3] for argv, _ in calls] == ["create", "inspect"]
    create_timeout = calls[0][1]
    assert isinstance(create_timeout, int | float) and math.isfinite(create_timeout)
    assert create_timeout >= build_index.INDEX_TIMEOUT
    assert all(isinstance(timeout, int | float) and math.isfinite(timeout) for _, timeout in calls)
    assert report.failure is None and report.pushed and report.index_digest == "sha256:index"


def test_a_full_disk_is_the_nodes_fault_whatever_the_step_says() -> None:
    from nodefleet.build.output import disk_full

    lines = [
        "#6 [2/2] RUN dd if=/dev/zero of=/big",
        "#6 0.512 dd: error writing '/big': No space left on device",
        'ERROR: failed to solve: process "/bin/sh -c dd" did not complete successfully: exit code: 1',
    ]
    assert classify_failure(error_text(lines)) is FailureKind.DOCKERFILE  # what buildx's ERROR line alone says
    assert disk_full(lines) == "#6 0.512 dd: error writing '/big': No space left on device"
    assert disk_full(lines[:1] + lines[2:]) is None


def _judge(monkeypatch: pytest.MonkeyPatch, said: str | None, free: int | None) -> Any:
    """An attempt failed with a Dockerfile-like error; the node, asked afterwards, has `free` bytes left."""
    from nodefleet.build import schedule
    from nodefleet.build.report import Attempt
    from nodefleet.host.facts import HostFacts, NodeHealth, Probe

    async def probe(*_args: object, **_kwargs: object) -> Probe:
        facts = HostFacts("", None, disk_free_bytes=free, disk_path="/var/lib/docker")
        return Probe(facts, NodeHealth("running", "v0.13.2", ("linux/arm64",)), None)

    async def session(_checks: object, _node: str) -> object:
        return object()

    monkeypatch.setattr(schedule, "probe", probe)
    attempt = Attempt("arm64-1", status="failed", error="process did not complete: exit code: 1")
    attempt.error_kind = FailureKind.DOCKERFILE
    ctx = SimpleNamespace(
        session=session, cache=None, inventory=SimpleNamespace(defaults=SimpleNamespace(connect_timeout=5.0))
    )
    asyncio.run(schedule._judge_disk(ctx, None, attempt, said))  # type: ignore[arg-type]
    return attempt


def test_a_failed_step_on_a_node_left_without_space_is_the_nodes_disk_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's full disk fails a RUN step with `exit code: 1` alone: the node's free space, asked after the
    failure, tells the disk's fault from the Dockerfile's, and the error names the node and its free space."""
    attempt = _judge(monkeypatch, None, 4096)
    assert attempt.error_kind is FailureKind.INFRASTRUCTURE
    assert attempt.error.startswith("arm64-1's disk is full (4.1kB free on /var/lib/docker): process did not")


def test_a_failed_step_on_a_node_with_space_stays_the_dockerfiles(monkeypatch: pytest.MonkeyPatch) -> None:
    attempt = _judge(monkeypatch, None, 50 * 1000**3)
    assert attempt.error_kind is FailureKind.DOCKERFILE and "disk" not in attempt.error


def test_a_step_that_says_no_space_is_the_disks_fault_with_its_free_space(monkeypatch: pytest.MonkeyPatch) -> None:
    said = "#6 0.512 dd: error writing '/big': No space left on device"
    attempt = _judge(monkeypatch, said, 700 * 1000**2)  # freed again since: the step's own words count
    assert attempt.error_kind is FailureKind.INFRASTRUCTURE
    assert attempt.error == f"arm64-1's disk is full (700MB free on /var/lib/docker): {said}"
