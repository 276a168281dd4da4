"""ansible/site.yml and the Ansible inventory export, run with ansible-core against the lab's amd64 host.

Only the amd64 hosts run Ansible: their SSH sessions are native Debian with python3, the arm hosts' are busybox
userlands without Python. The lab's SSH user `builder` has no sudo, and its engine is a per-namespace dockerd
that the lab runs, so the playbook runs with become off and service management off; every other step runs for
real and finds the host as the lab made it (engine packages installed, builder in the socket's group, the lab
CA trusted), or changes it (the BuildKit image preload). The lab hosts share this machine's root filesystem:
nothing here may install or upgrade a package, and nothing does (the engine packages are already installed).
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodefleet.export import render_ansible_inventory
from nodefleet.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "ansible" / "site.yml"
ROLE = ROOT / "ansible" / "roles" / "nodefleet_host"
RECAP_RE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")

pytestmark = pytest.mark.e2e


def field(record: Any, name: str) -> Any:
    """Read a lab.json field whether the fixture hands back a mapping or a dataclass."""
    return record[name] if isinstance(record, Mapping) else getattr(record, name)


def ansible_tool(name: str) -> str:
    """The ansible-core command, beside this Python or on PATH; a clear failure when it is missing."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install ansible-core (pip install -e '.[dev]')")
    return found


@pytest.fixture(scope="module")
def ansible_env() -> Iterator[dict[str, str]]:
    """Environment for ansible-core: no colour, host keys checked, short-lived SSH masters in a private folder."""
    control_dir = tempfile.mkdtemp(prefix="nfa-cp-")  # short: the ControlPath socket name has a length limit
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
            "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=5s",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir,
            # The lab's sshd has no sftp subsystem: skip the sftp and scp attempts before each transfer.
            "ANSIBLE_SSH_TRANSFER_METHOD": "piped",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_LOCAL_TEMP": control_dir,
        }
    )
    env.pop("ANSIBLE_CONFIG", None)
    yield env
    shutil.rmtree(control_dir, ignore_errors=True)


def run(argv: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def recap(output: str) -> dict[str, dict[str, int]]:
    """Parse PLAY RECAP lines into {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}}."""
    lines = output.split("PLAY RECAP", 1)[-1].splitlines()
    result = {}
    for line in lines:
        match = RECAP_RE.match(line.strip())
        if match:
            counts = dict(item.split("=") for item in match.group("counts").split())
            result[match.group("host")] = {key: int(value) for key, value in counts.items()}
    return result


def playbook(
    env: Mapping[str, str], cwd: Path, inventory: Path, extra: Mapping[str, Any], limit: str
) -> tuple[dict[str, dict[str, int]], str]:
    extra_file = cwd / f"extra-{uuid.uuid4().hex[:8]}.json"
    extra_file.write_text(json.dumps(dict(extra)))
    argv = [ansible_tool("ansible-playbook"), "-i", str(inventory), str(PLAYBOOK), "--limit", limit]
    done = run([*argv, "-e", f"@{extra_file}"], env, cwd)
    output = done.stdout + done.stderr
    result = recap(done.stdout)
    assert done.returncode == 0, f"ansible-playbook exited {done.returncode}:\n{output[-6000:]}"
    assert limit in result, f"no PLAY RECAP for {limit}:\n{output[-4000:]}"
    assert result[limit]["failed"] == 0
    assert result[limit]["unreachable"] == 0
    return result, output


def changed_tasks(output: str) -> list[str]:
    """Names of the tasks that reported `changed`, from ansible-playbook's default output."""
    names = []
    task = ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            names.append(task)
    return names


# --- the lab ---------------------------------------------------------------------------------------------


def amd64_host(lab: Any) -> Any:
    hosts = [host for host in field(lab, "hosts") if field(host, "platform") == "linux/amd64"]
    assert hosts, "the lab has no linux/amd64 host (the only kind with Python for Ansible)"
    return hosts[0]


def docker_cli(host: Any) -> list[str]:
    """docker CLI aimed at a lab host's engine from the root namespace."""
    return ["docker", "--host", field(host, "docker_host")]


def socket_group(host: Any) -> str:
    """The group owning the host engine's socket: the group the lab put `builder` in."""
    socket = field(host, "docker_host").removeprefix("unix://")
    return grp.getgrgid(Path(socket).stat().st_gid).gr_name


def lab_vars(lab: Any, host: Any, **overrides: Any) -> dict[str, Any]:
    """Extra vars for a lab run: what the lab cannot give (sudo, a system service) is switched off."""
    variables: dict[str, Any] = {
        # builder has no sudo; every privileged step finds nothing to do on a host the lab made.
        "ansible_become": False,
        # The lab's engines are per-namespace dockerds that labctl runs, not a system service.
        "nodefleet_host_manage_service": False,
        "nodefleet_host_docker_group": socket_group(host),
        "nodefleet_host_registry_cas": [
            # The lab trusts its CA under these names already: installing it again must change nothing.
            {"registry": field(lab, "registry"), "ca_file": str(field(lab, "ca")), "store_name": "nodefleet-lab"}
        ],
        "nodefleet_host_preload_buildkit": True,
    }
    variables.update(overrides)
    return variables


@pytest.fixture(scope="module")
def exported(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's inventory.toml exported by the documented command: nodefleet inventory export --format ansible."""
    path = tmp_path_factory.mktemp("ansible") / "hosts.yml"
    inventory = str(field(lab, "inventory"))
    argv = [sys.executable, "-m", "nodefleet", "inventory", "export", "--format", "ansible"]
    done = subprocess.run(
        [*argv, "--inventory", inventory, "--output", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert path.read_text() == render_ansible_inventory(load_inventory(inventory))
    return path


def test_export_is_read_by_ansible_inventory(
    lab: Any, exported: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    done = run([ansible_tool("ansible-inventory"), "-i", str(exported), "--list"], ansible_env, tmp_path)
    assert done.returncode == 0, done.stderr
    # A file Ansible could not parse is skipped with a warning and an empty inventory: refuse that too.
    assert "Unable to parse" not in done.stderr, done.stderr
    listed = json.loads(done.stdout)
    hostvars = listed["_meta"]["hostvars"]
    inventory = load_inventory(field(lab, "inventory"))
    lab_hosts = {field(host, "name"): host for host in field(lab, "hosts")}
    assert set(hostvars) == set(lab_hosts)
    assert set(listed["nodefleet"]["hosts"]) == {host.name for host in inventory.enabled_hosts}
    for name, host in lab_hosts.items():
        assert hostvars[name]["ansible_host"] == field(host, "address")
        assert hostvars[name]["ansible_user"] == field(host, "user")
        assert hostvars[name]["ansible_port"] == field(host, "port")
        assert hostvars[name]["ansible_ssh_private_key_file"] == str(field(lab, "ssh_key"))
        assert hostvars[name]["nodefleet_buildkit_image"] == field(host, "buildkit_image")
        assert f"UserKnownHostsFile={field(lab, 'known_hosts')}" in hostvars[name]["ansible_ssh_common_args"]


def test_export_reaches_every_lab_host_over_ssh(
    lab: Any, exported: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    """The exported connection settings log in everywhere, busybox hosts too (raw needs no Python)."""
    done = run(
        [ansible_tool("ansible"), "-i", str(exported), "nodefleet", "-m", "raw", "-a", "uname -m", "--one-line"],
        ansible_env,
        tmp_path,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    machines = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "armv7l", "linux/arm/v6": "armv6l"}
    for host in field(lab, "hosts"):
        line = next(line for line in done.stdout.splitlines() if line.startswith(field(host, "name") + " "))
        assert machines[field(host, "platform")] in line, line


def test_playbook_syntax_check(ansible_env: dict[str, str], tmp_path: Path) -> None:
    exported = tmp_path / "hosts.yml"
    exported.write_text(render_ansible_inventory(load_inventory(ROOT / "inventory.example.toml")))
    done = run(
        [ansible_tool("ansible-playbook"), "-i", str(exported), "--syntax-check", str(PLAYBOOK)], ansible_env, tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_playbook_prepares_lab_host_and_a_second_run_changes_nothing(
    lab: Any, exported: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    host = amd64_host(lab)
    name = field(host, "name")
    extra = lab_vars(lab, host)

    first, output = playbook(ansible_env, tmp_path, exported, extra, name)
    assert f"{name}: builds linux/amd64 natively" in output
    # The engine packages were found installed: nothing was installed (on the lab, that is this machine).
    assert not [task for task in changed_tasks(output) if "Install the missing packages" in task]
    # The BuildKit image of the exported inventory is on the host's engine now (pulled if it was missing).
    image = field(host, "buildkit_image")
    present = subprocess.run([*docker_cli(host), "image", "inspect", image], capture_output=True, check=False)
    assert present.returncode == 0, f"{image} not on {name}'s engine after the preload"

    second, output = playbook(ansible_env, tmp_path, exported, extra, name)
    assert second[name]["changed"] == 0, f"second run changed: {changed_tasks(output)}"
    assert second[name]["ok"] >= first[name]["ok"] - first[name]["changed"]


def test_playbook_refuses_a_pinned_platform_of_another_architecture(
    lab: Any, exported: Path, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    """The Raspberry Pi OS trap in reverse: pinned linux/arm64 on a host whose userland builds amd64."""
    host = amd64_host(lab)
    name = field(host, "name")
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(lab_vars(lab, host, nodefleet_host_pinned_platforms=["linux/arm64"])))
    argv = [ansible_tool("ansible-playbook"), "-i", str(exported), str(PLAYBOOK), "--limit", name, "-e", f"@{extra}"]
    done = run(argv, ansible_env, tmp_path)
    assert done.returncode != 0
    assert f"inventory.toml pins linux/arm64 on {name}" in done.stdout
    assert "builds linux/amd64 natively" in done.stdout
    result = recap(done.stdout)[name]
    assert result["failed"] == 1
    assert result["changed"] == 0


@pytest.fixture
def throwaway_image(lab: Any) -> Iterator[tuple[Any, str]]:
    """A tag no one else uses, on the lab registry, absent from the amd64 host's engine; removed afterwards."""
    host = amd64_host(lab)
    docker = docker_cli(host)
    source = f"{field(lab, 'registry')}/lab/busybox:stable"
    tag = f"{field(lab, 'registry')}/nodefleet-e2e/preload:{uuid.uuid4().hex[:12]}"
    subprocess.run([*docker, "pull", "--platform", "linux/amd64", source], check=True, capture_output=True)
    subprocess.run([*docker, "tag", source, tag], check=True, capture_output=True)
    try:
        yield host, tag
    finally:
        subprocess.run([*docker, "image", "rm", tag], capture_output=True, check=False)


def test_preload_pulls_a_missing_image_once(
    lab: Any, exported: Path, ansible_env: dict[str, str], tmp_path: Path, throwaway_image: tuple[Any, str]
) -> None:
    host, tag = throwaway_image
    name = field(host, "name")
    docker = docker_cli(host)
    subprocess.run([*docker, "push", tag], check=True, capture_output=True)
    subprocess.run([*docker, "image", "rm", tag], check=True, capture_output=True)
    extra = lab_vars(lab, host, nodefleet_host_buildkit_image=tag)

    _, output = playbook(ansible_env, tmp_path, exported, extra, name)
    assert "nodefleet_host : Pull the BuildKit image for the host's own platform" in changed_tasks(output)
    assert subprocess.run([*docker, "image", "inspect", tag], capture_output=True, check=False).returncode == 0

    second, output = playbook(ansible_env, tmp_path, exported, extra, name)
    assert second[name]["changed"] == 0, f"second run changed: {changed_tasks(output)}"


def test_preload_loads_an_archive_once(
    lab: Any, exported: Path, ansible_env: dict[str, str], tmp_path: Path, throwaway_image: tuple[Any, str]
) -> None:
    host, tag = throwaway_image
    name = field(host, "name")
    docker = docker_cli(host)
    archive = tmp_path / "buildkit.tar"
    subprocess.run([*docker, "save", "--output", str(archive), tag], check=True, capture_output=True)
    subprocess.run([*docker, "image", "rm", tag], check=True, capture_output=True)
    extra = lab_vars(lab, host, nodefleet_host_buildkit_image=tag, nodefleet_host_buildkit_image_archive=str(archive))

    _, output = playbook(ansible_env, tmp_path, exported, extra, name)
    changed = changed_tasks(output)
    assert "nodefleet_host : Load the archive into the engine" in changed
    assert "nodefleet_host : Pull the BuildKit image for the host's own platform" not in changed
    assert subprocess.run([*docker, "image", "inspect", tag], capture_output=True, check=False).returncode == 0
    # The copy on the host is removed again.
    assert not Path(f"/var/tmp/nodefleet-buildkit-{name}.tar").exists()

    second, output = playbook(ansible_env, tmp_path, exported, extra, name)
    assert second[name]["changed"] == 0, f"second run changed: {changed_tasks(output)}"


# --- the role's architecture table, templated by Ansible itself -------------------------------------------

ARCH_CASES = [
    ("Debian", "armhf", "aarch64", "linux/arm/v7"),
    ("Debian", "arm64", "aarch64", "linux/arm64"),
    ("Debian", "armhf", "armv6l", "linux/arm/v6"),
    ("Debian", "amd64", "x86_64", "linux/amd64"),
    ("Alpine", "armhf", "armv6l", "linux/arm/v6"),
    ("Alpine", "armv7", "aarch64", "linux/arm/v7"),
    ("RedHat", "armv7hl", "armv7l", "linux/arm/v7"),
    ("RedHat", "aarch64", "aarch64", "linux/arm64"),
]


def test_architecture_table_under_ansibles_templating(ansible_env: dict[str, str], tmp_path: Path) -> None:
    """The unit tests render the expression with plain Jinja2; this runs it through Ansible (local, no changes)."""
    cases = [
        {"family": family, "userland": userland, "machine": machine, "expected": expected}
        for family, userland, machine, expected in ARCH_CASES
    ]
    play = [
        {
            "name": "Architecture table",
            "hosts": "localhost",
            "gather_facts": False,
            "connection": "local",
            "vars": {"cases": cases},
            "tasks": [
                {"ansible.builtin.include_vars": {"file": str(ROLE / "vars" / "architectures.yml")}},
                {
                    "ansible.builtin.assert": {
                        "that": "__nodefleet_host_native_platform == item.expected",
                        "fail_msg": "{{ item }} gave {{ __nodefleet_host_native_platform }}",
                    },
                    "vars": {
                        "__nodefleet_host_package_family": "{{ item.family }}",
                        "__nodefleet_host_userland_arch": "{{ item.userland }}",
                        "__nodefleet_host_kernel_machine": "{{ item.machine }}",
                    },
                    "loop": "{{ cases }}",
                },
            ],
        }
    ]
    path = tmp_path / "arch.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    done = run([ansible_tool("ansible-playbook"), "-i", "localhost,", str(path)], ansible_env, tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert recap(done.stdout)["localhost"]["failed"] == 0
