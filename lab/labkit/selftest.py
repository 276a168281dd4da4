"""Self-test of the lab without nodefleet: plain `docker buildx` builds one image for three platforms, each on the
lab host of that architecture, pushes it to the lab registry, and every platform's image says where it was built."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .core import LabError, LabPaths, Log

BUILDER = "labselftest"
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
DOCKER = "/usr/bin/docker"
DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM {busybox} AS build
ARG BUILDPLATFORM
ARG TARGETPLATFORM
RUN echo "I am running on $BUILDPLATFORM, building for $TARGETPLATFORM" > /log
FROM {busybox}
COPY --from=build /log /log
CMD ["cat", "/log"]
"""


class SelfTest:
    """Each method is one step of `labctl.py selftest`; `cleanup` always runs."""

    def __init__(self, paths: LabPaths, lab: dict[str, object]) -> None:
        self.paths = paths
        self.lab = lab
        self.workdir = Path(tempfile.mkdtemp(prefix="nflab-selftest-"))
        # A private docker config: the self-test's builder never shows up in root's own buildx state.
        self.env = dict(os.environ, DOCKER_CONFIG=str(self.workdir / "docker-config"))
        self.env.pop("DOCKER_HOST", None)
        self.image = f"{lab['registry']}/lab/selftest:latest"
        self.nodes = self._pick_nodes()

    def _pick_nodes(self) -> list[dict[str, object]]:
        hosts = self.lab["hosts"]
        assert isinstance(hosts, list)
        chosen = []
        for platform in PLATFORMS:
            host = next((h for h in hosts if h["platform"] == platform), None)
            if host is None:
                raise LabError(f"the self-test needs a {platform} host; this lab has {self.lab.get('spec')}")
            chosen.append(host)
        return chosen

    def steps(self) -> list[tuple[str, Callable[[Log], str]]]:
        return [("create builder", self.create_builder), ("bootstrap", self.bootstrap),
                ("build + push", self.build), ("run images", self.run_images)]  # fmt: skip

    def docker(self, args: list[str], log: Log, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        argv = [DOCKER, *args]
        log.write(f"$ {shlex.join(argv)}")
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or self.env,
                                    check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise LabError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f}s") from None
        log.write(result.stdout + result.stderr, "  ")
        if result.returncode != 0:
            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
            raise LabError(f"`{shlex.join(argv[:4])} ...` exited {result.returncode}: {' | '.join(tail)}")
        return result.stdout

    def create_builder(self, log: Log) -> str:
        for index, host in enumerate(self.nodes):
            args = ["buildx", "create", "--name", BUILDER, "--driver", "docker-container",
                    "--node", f"{BUILDER}-{host['name']}", "--platform", str(host["platform"]),
                    "--driver-opt", f"image={host['buildkit_image']}",
                    "--buildkitd-config", str(self.lab["buildkitd_config"])]  # fmt: skip
            driver_opts = host.get("driver_opts") or {}
            assert isinstance(driver_opts, dict)
            for key, value in driver_opts.items():
                args += ["--driver-opt", f"{key}={value}"]
            if index:
                args.append("--append")
            args.append(f"ssh://{host['user']}@{host['address']}")
            self.docker(args, log, timeout=120)
        return ", ".join(f"{h['name']}={h['platform']}" for h in self.nodes)

    def bootstrap(self, log: Log) -> str:
        self.docker(["buildx", "inspect", "--bootstrap", "--builder", BUILDER], log, timeout=300)
        return "3 nodes running"

    def build(self, log: Log) -> str:
        context = self.workdir / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(DOCKERFILE.format(busybox=self.lab["busybox_image"]))
        self.docker(["buildx", "build", "--builder", BUILDER, "--platform", ",".join(PLATFORMS),
                     "--tag", self.image, "--push", "--progress", "plain", str(context)], log, timeout=600)  # fmt: skip
        return self.image

    def run_images(self, log: Log) -> str:
        """Each platform's image runs on the amd64 host's engine (arm ones via binfmt) and names its build."""
        amd64 = self.nodes[0]
        env = dict(self.env, DOCKER_HOST=str(amd64["docker_host"]))
        answers = []
        for platform in PLATFORMS:
            out = self.docker(["run", "--rm", "--pull", "always", "--platform", platform, self.image], log, env=env)
            expected = f"I am running on {platform}, building for {platform}"
            if out.strip() != expected:
                raise LabError(f"{platform} image said {out.strip()!r}, expected {expected!r}")
            answers.append(platform)
        return f"{len(answers)} platforms built natively: {', '.join(answers)}"

    def cleanup(self, log: Log) -> str:
        try:
            self.docker(["buildx", "rm", BUILDER], log, timeout=120)
        finally:
            subprocess.run(["rm", "-rf", str(self.workdir)], check=False)
        return f"builder {BUILDER} removed"
