"""Facts and node health parsed from the remote scripts' output."""

from __future__ import annotations

import json
import subprocess

import pytest

from nodefleet.facts import FACTS_SCRIPT, node_health_script, parse_facts, parse_node_health


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
    out = subprocess.run(["sh", "-c", FACTS_SCRIPT], capture_output=True, text=True, check=True).stdout
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
