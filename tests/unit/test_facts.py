"""Facts and node health parsed from the remote scripts' output."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from nodefleet.facts import (
    facts_script,
    node_health_script,
    parse_facts,
    parse_image_present,
    parse_node_health,
    probe_script,
)


def test_parse_facts_healthy_host() -> None:
    facts = parse_facts(
        "machine=aarch64\nuserland_bits=32\nos=Raspbian GNU/Linux 12 (bookworm)\ndocker_cli=yes\n"
        "server_version=26.1.5\ndocker_root=/var/lib/docker\ndisk_free_kb=1024\n"
    )
    assert facts.platform == "linux/arm/v7"
    assert facts.engine_usable and facts.engine_problem() is None
    assert facts.disk_free_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("lines", "hint"),
    [
        ("docker_cli=no", "not installed"),
        ("docker_cli=yes\ndocker_error=permission denied while trying to connect", "docker group"),
        ("docker_cli=yes\ndocker_error=Cannot connect to the Docker daemon", "not running"),
    ],
)
def test_engine_problems_say_the_fix(lines: str, hint: str) -> None:
    facts = parse_facts("machine=x86_64\n" + lines)
    problem = facts.engine_problem()
    assert problem is not None and hint in problem


def test_unknown_machine_has_no_platform() -> None:
    assert parse_facts("machine=sparc64").platform is None


def test_facts_script_runs_under_sh_here() -> None:
    out = subprocess.run(["sh", "-c", facts_script()], capture_output=True, text=True, check=True).stdout
    facts = parse_facts(out)
    assert facts.machine and facts.platform is not None
    assert facts.disk_free_bytes is not None


def test_node_health() -> None:
    workers = [
        {
            "id": "x",
            "platforms": [
                {"os": "linux", "architecture": "arm", "variant": "v8"},
                {"os": "linux", "architecture": "arm", "variant": "v7"},
            ],
        }
    ]
    health = parse_node_health(
        f"state=running\nbuildkit=buildkitd github.com/moby/buildkit v0.13.2 abc\nworkers={json.dumps(workers)}\n"
    )
    assert health.state == "running" and health.buildkit_version == "v0.13.2"
    assert health.native_platform == "linux/arm/v7"


def test_node_health_missing_container() -> None:
    health = parse_node_health("state=missing\nbuildkit=\nworkers=\n")
    assert health.state == "missing" and health.native_platform is None


def test_node_health_script_quotes_the_name() -> None:
    assert "'buildx_buildkit_a;b'" in node_health_script("buildx_buildkit_a;b")


INSTANCE = "c0ffee" * 10 + "abcd 2026-11-28T10:17:02.027105808Z"


def test_node_health_keeps_the_instance_and_whether_buildkit_was_asked() -> None:
    asked = parse_node_health(f"state=running\ninstance={INSTANCE}\nbuildkit=BuildKit: x v0.13.2 y\nworkers=[]\n")
    assert asked.instance == INSTANCE and asked.asked and asked.buildkit_version == "v0.13.2"
    known = parse_node_health(f"state=running\ninstance={INSTANCE}\n")
    assert known.instance == INSTANCE and not known.asked
    assert parse_node_health("state=missing\ninstance= \n").instance is None


def test_image_present() -> None:
    assert parse_image_present("machine=x\nimage=present\n") is True
    assert parse_image_present("image=absent\n") is False
    assert parse_image_present("machine=x\n") is None


def test_probe_script_runs_under_sh_here_without_an_engine() -> None:
    """Facts, image and health in one script; with no engine the health part says the container is missing."""
    script = probe_script("buildx_buildkit_x", image="moby/buildkit:v0.13.2", known=INSTANCE)
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    facts = parse_facts(out)
    assert facts.platform is not None and facts.disk_free_bytes is not None
    assert parse_image_present(out) is False
    assert parse_node_health(out).state == "missing"


@pytest.mark.parametrize(
    ("stub", "expected"),
    [
        # An engine that does not answer: `docker version --format` prints an empty version, its error on stderr.
        ("echo server_version=; echo 'Cannot connect to the Docker daemon at unix:///x' >&2; exit 1", None),
        ("echo 'permission denied while trying to connect to the Docker daemon socket' >&2; exit 1", None),
        ('[ "$1" = version ] && echo server_version=27.3.1; [ "$1" = info ] && echo /nonexistent; exit 0', "27.3.1"),
    ],
)
def test_facts_script_reads_the_engine_from_docker_version(tmp_path: Path, stub: str, expected: str | None) -> None:
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\n{stub}\n")
    docker.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", facts_script()], capture_output=True, text=True, check=True, env=env).stdout
    facts = parse_facts(out)
    assert facts.engine_version == expected
    if expected is None:
        assert facts.engine_error and "server_version" not in facts.engine_error
        assert facts.engine_problem() is not None
    else:
        assert "docker_root=/nonexistent" in out  # no container to learn it from: `docker info` is asked
    assert facts.disk_free_bytes is not None  # df falls back to / when the engine's root is unknown


def test_the_probe_takes_the_data_root_from_the_state_volume_and_spares_docker_info(tmp_path: Path) -> None:
    """`docker info` starts every CLI plugin and has the engine run its runtimes: with the node's container there,
    the data root is the folder holding its state volume."""
    docker = tmp_path / "docker"
    log = tmp_path / "calls"
    root = tmp_path / "data root"
    volume = root / "volumes" / "buildx_buildkit_x_state" / "_data"
    volume.mkdir(parents=True)
    docker.write_text(
        f'#!/bin/sh\necho "$1" >> {log}\n'
        f'[ "$1" = inspect ] && echo "running c0ffee 2026-11-28T10:17:02Z img:v1 {volume}"\n'
        '[ "$1" = version ] && echo server_version=27.3.1\nexit 0\n'
    )
    docker.chmod(0o755)
    script = probe_script("buildx_buildkit_x", known="c0ffee 2026-11-28T10:17:02Z")
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    assert f"docker_root={root}\n" in out
    assert log.read_text().split() == ["inspect", "version"]
    facts = parse_facts(out)
    assert facts.engine_version == "27.3.1" and facts.disk_free_bytes is not None
    assert parse_node_health(out).instance == "c0ffee 2026-11-28T10:17:02Z"


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _facts_output(script: str) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout


def test_a_host_in_the_known_boot_reports_only_its_boot_id() -> None:
    """uname and getconf are spared while the host is still in the boot the caller knows its machine from."""
    fresh = parse_facts(_facts_output(facts_script()))
    assert fresh.boot_id == _boot_id() and fresh.machine and fresh.platform is not None
    known = _facts_output(facts_script(_boot_id()))
    facts = parse_facts(known)
    assert facts.boot_id == _boot_id() and facts.machine == "" and facts.platform is None
    assert "machine=" not in known and "userland_bits=" not in known
    assert facts.disk_free_bytes is not None  # the rest is asked every time
    assert parse_facts(_facts_output(facts_script(str(uuid.uuid4())))).machine == fresh.machine


def test_a_known_boot_id_that_is_not_one_never_reaches_the_script() -> None:
    script = facts_script("x'; rm -rf / #")
    assert "rm -rf" not in script and script == facts_script()
    assert parse_facts("boot_id=not-a-boot-id\n").boot_id is None


@pytest.mark.parametrize(
    ("inspect", "asked"),
    [
        ("running c0ffee 2026-11-28T10:17:02Z reg.example:5000/buildkit:v1", False),  # made from the image: present
        ("running c0ffee 2026-11-28T10:17:02Z reg.example:5000/buildkit:v0", True),  # another image: ask the engine
        ("exited c0ffee 2026-11-28T10:17:02Z reg.example:5000/buildkit:v1", True),  # not running: ask the engine
    ],
)
def test_a_running_container_made_from_the_image_answers_the_image_check(
    tmp_path: Path, inspect: str, asked: bool
) -> None:
    docker = tmp_path / "docker"
    log = tmp_path / "calls"
    docker.write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n[ "$1 $2" = "inspect -f" ] && echo "{inspect}"\n'
        '[ "$1 $2" = "image inspect" ] && exit 1\nexit 0\n'
    )
    docker.chmod(0o755)
    script = probe_script(
        "buildx_buildkit_x", image="reg.example:5000/buildkit:v1", known="c0ffee 2026-11-28T10:17:02Z"
    )
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    image_checks = [line for line in log.read_text().splitlines() if line.startswith("image inspect")]
    assert bool(image_checks) is asked
    assert parse_image_present(out) is (not asked)  # the stub's engine has no image
    assert parse_node_health(out).state == inspect.split(maxsplit=1)[0]
