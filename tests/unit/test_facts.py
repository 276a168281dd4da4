"""Facts and node health parsed from the probe's output (host/scripts/probe.sh run under bash, dash and busybox sh,
with a stub `docker` where an engine is needed)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from nodefleet.host.facts import (
    Facts,
    HostFacts,
    NodeHealth,
    parse_keys,
    parse_probe,
    probe_script,
)
from nodefleet.host.facts import parse_facts as parse_fact_keys
from nodefleet.host.facts import parse_node_health as parse_health_keys
from nodefleet.host.scripts import script_text
from tests.unit.shells import SHELL_NAMES, run_script, stub_docker

CONTAINER = "buildx_buildkit_x"
NO_ENGINE = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.fixture(params=SHELL_NAMES)
def shell(request: pytest.FixtureRequest) -> str:
    """The login shell the probe runs under."""
    return str(request.param)


def parse_facts(output: str) -> HostFacts:
    return parse_fact_keys(parse_keys(output))


def parse_node_health(output: str) -> NodeHealth:
    return parse_health_keys(parse_keys(output))


def parse_image_present(output: str) -> bool | None:
    return parse_probe(output).image_present


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


def test_probe_script_is_probe_sh_after_its_quoted_arguments() -> None:
    script = probe_script(CONTAINER, image="img:1", known_instance="c0ffee now", facts=Facts.MACHINE)
    first, _, rest = script.partition("\n")
    assert first == f"set -- {CONTAINER} 'c0ffee now' '' img:1 machine ''"
    assert rest == script_text("probe")


def test_facts_script_runs_under_the_shell(shell: str) -> None:
    out = run_script(shell, probe_script(CONTAINER), NO_ENGINE).stdout
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
    assert probe_script("buildx_buildkit_a;b", facts=Facts.NONE).startswith("set -- 'buildx_buildkit_a;b' ")


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


def test_probe_script_runs_under_the_shell_without_an_engine(shell: str) -> None:
    """Facts, image and health in one script; with no engine the health part says the container's state is unknown,
    with the engine's error (the scripts before probe.sh said "missing")."""
    script = probe_script(CONTAINER, image="moby/buildkit:v0.13.2", known_instance=INSTANCE)
    out = run_script(shell, script, NO_ENGINE).stdout
    facts = parse_facts(out)
    assert facts.platform is not None and facts.disk_free_bytes is not None
    assert parse_image_present(out) is False
    health = parse_node_health(out)
    assert health.state == "unknown" and health.engine_error and health.native_platform is None


def test_an_engine_that_does_not_answer_is_the_nodes_engine_error(tmp_path: Path, shell: str) -> None:
    """The container's state is unknown (not missing) when the engine cannot say: its error is kept."""
    stub = stub_docker(tmp_path / "bin", "echo 'Cannot connect to the Docker daemon at unix:///x' >&2; exit 1")
    out = run_script(shell, probe_script(CONTAINER, facts=Facts.NONE), {"PATH": f"{stub}:/usr/bin:/bin"}).stdout
    health = parse_node_health(out)
    assert health.state == "unknown" and health.engine_error == "Cannot connect to the Docker daemon at unix:///x"
    assert "boot_id=" not in out  # Facts.NONE: the node only


@pytest.mark.parametrize(
    ("stub", "expected"),
    [
        # An engine that does not answer: `docker version --format` prints an empty version, its error on stderr.
        ("echo server_version=; echo 'Cannot connect to the Docker daemon at unix:///x' >&2; exit 1", None),
        ("echo 'permission denied while trying to connect to the Docker daemon socket' >&2; exit 1", None),
        ('[ "$1" = version ] && echo server_version=27.3.1; [ "$1" = info ] && echo /nonexistent; exit 0', "27.3.1"),
    ],
)
def test_facts_script_reads_the_engine_from_docker_version(
    tmp_path: Path, shell: str, stub: str, expected: str | None
) -> None:
    env = {"PATH": f"{stub_docker(tmp_path / 'bin', stub)}:/usr/bin:/bin"}
    out = run_script(shell, probe_script(CONTAINER), env).stdout
    facts = parse_facts(out)
    assert facts.engine_version == expected
    if expected is None:
        assert facts.engine_error and "server_version" not in facts.engine_error
        assert facts.engine_problem() is not None
    else:
        assert "docker_root=/nonexistent" in out  # no container to learn it from: `docker info` is asked
    assert facts.disk_free_bytes is not None  # df falls back to / when the engine's root is unknown


def test_the_probe_takes_the_data_root_from_the_state_volume_and_spares_docker_info(tmp_path: Path, shell: str) -> None:
    """`docker info` starts every CLI plugin and has the engine run its runtimes: with the node's container there,
    the data root is the folder holding its state volume."""
    log = tmp_path / "calls"
    root = tmp_path / "data root"
    volume = root / "volumes" / "buildx_buildkit_x_state" / "_data"
    volume.mkdir(parents=True)
    stub = stub_docker(
        tmp_path / "bin",
        f'echo "$1" >> {log}\n'
        f'[ "$1" = inspect ] && echo "running c0ffee 2026-11-28T10:17:02Z img:v1 {volume}"\n'
        '[ "$1" = version ] && echo server_version=27.3.1\nexit 0',
    )
    script = probe_script(CONTAINER, known_instance="c0ffee 2026-11-28T10:17:02Z")
    out = run_script(shell, script, {"PATH": f"{stub}:/usr/bin:/bin"}).stdout
    assert f"docker_root={root}\n" in out
    assert log.read_text().split() == ["inspect", "version"]
    facts = parse_facts(out)
    assert facts.engine_version == "27.3.1" and facts.disk_free_bytes is not None
    assert parse_node_health(out).instance == "c0ffee 2026-11-28T10:17:02Z"


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_a_host_in_the_known_boot_reports_only_its_boot_id(shell: str) -> None:
    """uname and getconf are spared while the host is still in the boot the caller knows its machine from."""

    def output(known_boot: str | None) -> str:
        return run_script(shell, probe_script(CONTAINER, known_boot=known_boot), NO_ENGINE).stdout

    fresh = parse_facts(output(None))
    assert fresh.boot_id == _boot_id() and fresh.machine and fresh.platform is not None
    known = output(_boot_id())
    facts = parse_facts(known)
    assert facts.boot_id == _boot_id() and facts.machine == "" and facts.platform is None
    assert "machine=" not in known and "userland_bits=" not in known
    assert facts.disk_free_bytes is not None  # the rest is asked every time
    assert parse_facts(output(str(uuid.uuid4()))).machine == fresh.machine


def test_a_known_boot_id_that_is_not_one_never_reaches_the_script() -> None:
    script = probe_script(CONTAINER, known_boot="x'; rm -rf / #")
    assert "rm -rf" not in script and script == probe_script(CONTAINER)
    assert parse_facts("boot_id=not-a-boot-id\n").boot_id is None


@pytest.mark.parametrize(
    ("facts", "keys"),
    [
        (Facts.NONE, {"state", "instance", "image", "cpus"}),
        (Facts.MACHINE, {"state", "instance", "image", "cpus", "boot_id", "machine", "userland_bits"}),
        (
            Facts.FULL,
            {"state", "instance", "image", "cpus", "boot_id", "machine", "userland_bits", "os", "docker_cli"}
            | {"server_version", "docker_root", "disk_path", "disk_free_kb", "disk_size_kb"},
        ),
    ],
)
def test_the_probe_asks_as_much_of_the_host_as_it_is_told(
    tmp_path: Path, shell: str, facts: Facts, keys: set[str]
) -> None:
    log = tmp_path / "calls"
    stub = stub_docker(
        tmp_path / "bin",
        f'echo "$1" >> {log}\n[ "$1" = version ] && echo server_version=27.3.1\n'
        '[ "$1" = inspect ] && echo "Error: No such object: $4" >&2\nexit 1',
    )
    out = run_script(shell, probe_script(CONTAINER, image="img:1", facts=facts), {"PATH": f"{stub}:/usr/bin:/bin"})
    assert set(parse_keys(out.stdout)) == keys, out.stdout
    assert "version" in log.read_text().split() or facts is not Facts.FULL


def test_a_host_without_getconf_takes_its_userland_width_from_bin_sh(tmp_path: Path) -> None:
    """An Alpine- or OpenWrt-like host: busybox sh with its applets and nothing else on PATH (no getconf). The
    userland width is the ELF class of /bin/sh (byte 4: 1 for 32 bits, 2 for 64)."""
    stub = stub_docker(tmp_path / "bin", "exit 1")
    width = {1: 32, 2: 64}[Path("/bin/sh").read_bytes()[4]]
    out = run_script("busybox", probe_script(CONTAINER), {"PATH": str(stub)}).stdout
    facts = parse_facts(out)
    assert facts.userland_bits == width and facts.machine and facts.platform is not None
    assert facts.os and facts.disk_free_bytes is not None  # os-release read by the shell, df an applet


@pytest.mark.parametrize(
    ("inspect", "asked"),
    [
        ("running c0ffee 2026-11-28T10:17:02Z reg.example:5000/buildkit:v1", False),  # made from the image: present
        ("running c0ffee 2026-11-28T10:17:02Z reg.example:5000/buildkit:v0", True),  # another image: ask the engine
        ("exited c0ffee 2026-11-28T10:17:02Z reg.example:5000/buildkit:v1", True),  # not running: ask the engine
    ],
)
def test_a_running_container_made_from_the_image_answers_the_image_check(
    tmp_path: Path, shell: str, inspect: str, asked: bool
) -> None:
    log = tmp_path / "calls"
    stub = stub_docker(
        tmp_path / "bin",
        f'echo "$*" >> {log}\n[ "$1 $2 $3 $4" = "inspect --type container -f" ] && echo "{inspect}"\n'
        '[ "$1 $2" = "image inspect" ] && exit 1\nexit 0',
    )
    script = probe_script(CONTAINER, image="reg.example:5000/buildkit:v1", known_instance="c0ffee 2026-11-28T10:17:02Z")
    out = run_script(shell, script, {"PATH": f"{stub}:/usr/bin:/bin"}).stdout
    image_checks = [line for line in log.read_text().splitlines() if line.startswith("image inspect")]
    assert bool(image_checks) is asked
    assert parse_image_present(out) is (not asked)  # the stub's engine has no image
    assert parse_node_health(out).state == inspect.split(maxsplit=1)[0]


def test_buildkit_is_asked_through_buildctl_for_a_new_instance(tmp_path: Path, shell: str) -> None:
    """A running container the caller has no answers for: BuildKit's version and workers, through buildctl."""
    workers = [
        {"id": "w", "platforms": [{"os": "linux", "architecture": "arm64"}, {"os": "linux", "architecture": "arm"}]}
    ]
    stub = stub_docker(
        tmp_path / "bin",
        '[ "$1" = inspect ] && echo "running c0ffee 2026-11-28T10:17:02Z img:v1"\n'
        '[ "$1 $3 $4 $5" = "exec buildctl debug info" ] && '
        'printf "BuildKit: github.com/moby/buildkit v0.13.2 abc\\n\\n"\n'
        f'[ "$1 $3 $4 $5" = "exec buildctl debug workers" ] && echo \'{json.dumps(workers)}\'\nexit 0',
    )
    out = run_script(shell, probe_script(CONTAINER, facts=Facts.NONE), {"PATH": f"{stub}:/usr/bin:/bin"}).stdout
    health = parse_node_health(out)
    assert health.asked and health.buildkit_version == "v0.13.2" and health.native_platform == "linux/arm64"
    assert health.instance == "c0ffee 2026-11-28T10:17:02Z" and health.container_id == "c0ffee"


BACKSLASHES = r"a\\b \n \t \c end"


def test_values_from_the_host_reach_the_parser_unchanged(tmp_path: Path, shell: str) -> None:
    r"""What docker says (an error, BuildKit's worker JSON) is printed as it is: dash's `echo` would read `\n`,
    `\t`, `\\` and `\c` in it as escapes (JSON escapes backslashes and control characters in labels)."""
    workers = [{"id": "w", "labels": {"x": BACKSLASHES}, "platforms": [{"os": "linux", "architecture": "amd64"}]}]
    stub = stub_docker(
        tmp_path / "bin",
        '[ "$1" = inspect ] && echo "running c0ffee 2026-11-28T10:17:02Z img:v1"\n'
        # printf, not echo: the stub itself runs under /bin/sh, which may be dash.
        f"[ \"$1 $3 $4 $5\" = \"exec buildctl debug workers\" ] && printf '%s\\n' '{json.dumps(workers)}'\n"
        f"[ \"$1\" = version ] && {{ printf '%s\\n' '{BACKSLASHES}' >&2; exit 1; }}\nexit 0",
    )
    out = run_script(shell, probe_script(CONTAINER), {"PATH": f"{stub}:/usr/bin:/bin"}).stdout
    values = parse_keys(out)
    assert json.loads(values["workers"]) == workers
    assert parse_node_health(out).native_platform == "linux/amd64"
    assert parse_facts(out).engine_error == BACKSLASHES


def test_the_probe_counts_the_hosts_cpus(shell: str, tmp_path: Path) -> None:
    """The CPU count (a node's default share of a bake's jobs) comes from /proc/cpuinfo, read by the shell."""
    path = stub_docker(tmp_path / "bin", "exit 1")
    env = {**os.environ, "PATH": f"{path}:{os.environ['PATH']}"}
    out = run_script(shell, probe_script(CONTAINER, facts=Facts.NONE), env).stdout
    assert parse_facts(out).cpus == os.cpu_count()


def test_a_running_node_tells_its_disk_and_asked_its_cache_without_host_facts(tmp_path: Path, shell: str) -> None:
    """A build's quick check (no host facts) still learns the free space of the disk holding the node's state; the
    cache's figures come from `buildctl du`'s summary lines, and only when asked."""
    root = tmp_path / "data root"
    volume = root / "volumes" / "buildx_buildkit_x_state" / "_data"
    volume.mkdir(parents=True)
    du = "ID RECLAIMABLE SIZE LAST ACCESSED\\nabc true 4.096kB 2 hours ago\\nReclaimable:\\t1.5GB\\nTotal:\\t\\t2.25GB"
    stub = stub_docker(
        tmp_path / "bin",
        f'[ "$1" = inspect ] && echo "running c0ffee 2026-11-28T10:17:02Z img:v1 {volume}"\n'
        f'[ "$1 $3 $4" = "exec buildctl du" ] && printf "{du}\\n"\nexit 0',
    )
    env = {"PATH": f"{stub}:/usr/bin:/bin"}
    script = probe_script(CONTAINER, known_instance="c0ffee 2026-11-28T10:17:02Z", facts=Facts.NONE)
    plain = parse_probe(run_script(shell, script, env).stdout)
    assert plain.facts.disk_path == str(root) and plain.cache is None
    assert plain.facts.disk_free_bytes is not None and plain.facts.disk_size_bytes is not None
    assert plain.facts.disk_free_bytes <= plain.facts.disk_size_bytes
    script = probe_script(CONTAINER, known_instance="c0ffee 2026-11-28T10:17:02Z", facts=Facts.NONE, cache=True)
    asked = parse_probe(run_script(shell, script, env).stdout)
    assert asked.cache is not None
    assert (asked.cache.total_bytes, asked.cache.reclaimable_bytes) == (2_250_000_000, 1_500_000_000)


def test_a_cache_buildkit_cannot_size_is_an_error_not_a_figure() -> None:
    cache = parse_probe("state=running\ncache_error=buildctl: connection refused\n").cache
    assert cache is not None and cache.error == "buildctl: connection refused" and cache.total_bytes is None
    assert parse_probe("state=running\n").cache is None
