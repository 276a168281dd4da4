"""Pure argv builders for the docker buildx CLI: nodefleet runs buildx, it never writes buildx's state."""

from __future__ import annotations

from collections.abc import Sequence

from nodefleet.buildx.nodes import DRIVER, NodeSpec


def create_argv(builder: str, node: NodeSpec, *, append: bool) -> list[str]:
    """`docker buildx create` that creates the builder with `node`, or adds/updates `node` in it."""
    argv = ["docker", "buildx", "create", "--name", builder, "--node", node.name, "--driver", DRIVER]
    if append:
        argv.append("--append")
    if node.platforms:
        argv += ["--platform", ",".join(node.platforms)]
    for key, value in sorted(node.all_driver_opts().items()):
        argv += ["--driver-opt", f"{key}={value}"]
    if node.buildkitd_config is not None:
        argv += ["--buildkitd-config", str(node.buildkitd_config)]
    argv.append(node.endpoint)
    return argv


def leave_argv(builder: str, node: str) -> list[str]:
    """`docker buildx create --leave`: drop a node from the store without contacting its host."""
    return ["docker", "buildx", "create", "--name", builder, "--node", node, "--leave"]


def bootstrap_argv(builder: str) -> list[str]:
    """`docker buildx inspect --bootstrap`: start every node's BuildKit container."""
    return ["docker", "buildx", "inspect", "--bootstrap", "--builder", builder]


def rm_argv(builder: str, *, keep_state: bool, keep_daemon: bool = False) -> list[str]:
    """`docker buildx rm` for a whole builder."""
    argv = ["docker", "buildx", "rm", "--force"]
    if keep_state:
        argv.append("--keep-state")
    if keep_daemon:
        argv.append("--keep-daemon")
    return [*argv, builder]


def imagetools_create_argv(builder: str, names: Sequence[str], sources: Sequence[str]) -> list[str]:
    """`docker buildx imagetools create`: one index from the platforms' pushed images, under every name."""
    argv = ["docker", "buildx", "imagetools", "create", "--builder", builder, "--progress", "plain"]
    for name in names:
        argv += ["--tag", name]
    return [*argv, *sources]


def imagetools_inspect_argv(builder: str, name: str) -> list[str]:
    """`docker buildx imagetools inspect` printing the index as JSON (its digest and its manifests)."""
    return ["docker", "buildx", "imagetools", "inspect", "--builder", builder, "--format", "{{json .Manifest}}", name]
