"""Files a client needs to use the lab: lab key, known_hosts, ssh_config (+ the Include line), buildkitd.toml,
the nodefleet inventory and lab.json."""

from __future__ import annotations

import json
import pwd
from pathlib import Path

from .core import Journal, LabPaths, Log, run
from .hosts import data_root, engine_socket, host_public_key
from .pki import ca_cert
from .spec import LAB_USER, PLATFORMS, REGISTRY, SUBNET_PREFIX, Host, spec_of

INCLUDE_MARK = "# nodefleet-lab"


def lab_key(paths: LabPaths) -> Path:
    return paths.state / "id_ed25519"


def make_lab_key(paths: LabPaths, log: Log) -> Path:
    """The key the lab user logs in with, and the root-owned authorized_keys every sshd reads."""
    key = lab_key(paths)
    for old in (key, key.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nodefleet-lab", "-f", str(key)], log)
    key.chmod(0o600)
    authorized = paths.state / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    authorized.chmod(0o644)
    return authorized


def write_known_hosts(paths: LabPaths, hosts: list[Host]) -> Path:
    known = paths.state / "known_hosts"
    known.write_text("".join(f"{h.address} {host_public_key(paths, h)}\n" for h in hosts))
    return known


def host_key_known(paths: LabPaths, host: Host) -> bool:
    """Does the lab's known_hosts hold the key the host's sshd serves now?"""
    try:
        known = (paths.state / "known_hosts").read_text().splitlines()
        return f"{host.address} {host_public_key(paths, host)}" in known
    except OSError:
        return False


def write_ssh_config(paths: LabPaths) -> Path:
    config = paths.state / "ssh_config"
    config.write_text(
        f"# Written by nodefleet's lab (lab/labctl.py); removed by `labctl.py down`.\n"
        f"Host {SUBNET_PREFIX}.*\n"
        f"    User {LAB_USER}\n"
        f"    IdentityFile {lab_key(paths)}\n"
        f"    UserKnownHostsFile {paths.state / 'known_hosts'}\n"
        "    IdentitiesOnly yes\n"
        "    StrictHostKeyChecking yes\n"
        # End the Host block, so nothing after the Include in the user's file is scoped to the lab.
        "Host *\n"
    )
    return config


def root_ssh_config() -> Path:
    return Path(pwd.getpwuid(0).pw_dir) / ".ssh" / "config"


def include_line(paths: LabPaths) -> str:
    return f"Include {paths.state / 'ssh_config'}  {INCLUDE_MARK}"


def add_include(paths: LabPaths, journal: Journal) -> None:
    """Put the one marked Include line at the top of root's ~/.ssh/config (creating the file if missing)."""
    config = root_ssh_config()
    if not config.parent.exists():
        config.parent.mkdir(mode=0o700)
        journal.record("created_dir", path=str(config.parent))
    if not config.exists():
        config.touch(mode=0o600)
        journal.record("created_file", path=str(config))
    lines = [line for line in config.read_text().splitlines() if not line.rstrip().endswith(INCLUDE_MARK)]
    config.write_text("\n".join([include_line(paths), *lines]) + "\n")


def remove_include() -> None:
    config = root_ssh_config()
    if not config.exists():
        return
    text = config.read_text()
    kept = [line for line in text.splitlines() if not line.rstrip().endswith(INCLUDE_MARK)]
    if len(kept) != len(text.splitlines()):
        config.write_text("".join(line + "\n" for line in kept))


def write_buildkitd_toml(paths: LabPaths) -> Path:
    toml = paths.state / "buildkitd.toml"
    toml.write_text(f'[registry."{REGISTRY}"]\n  ca = ["{ca_cert(paths)}"]\n')
    return toml


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable ASCII is a valid TOML basic string


def inline_table(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{toml_string(k)} = {toml_string(v)}" for k, v in values.items()) + " }"


def write_inventory(paths: LabPaths, hosts: list[Host]) -> Path:
    default_image = f"{REGISTRY}/lab/buildkit:v0.13.2-{PLATFORMS['amd64'].buildkit_tag}"
    lines = [
        "# nodefleet inventory of the lab (written by lab/labctl.py up)",
        "[builder]",
        'name = "nflab"',
        "",
        "[defaults]",
        f"user = {toml_string(LAB_USER)}",
        "port = 22",
        f"identity_file = {toml_string(str(lab_key(paths)))}",
        f"known_hosts = {toml_string(str(paths.state / 'known_hosts'))}",
        "connect_timeout = 5",
        f"buildkit_image = {toml_string(default_image)}",
        f"buildkitd_config = {toml_string(str(paths.state / 'buildkitd.toml'))}",
    ]
    for host in hosts:
        lines += ["", "[[hosts]]", f"name = {toml_string(host.name)}", f"address = {toml_string(host.address)}"]
        if host.buildkit_image != default_image:
            lines.append(f"buildkit_image = {toml_string(host.buildkit_image)}")
        if host.platform.driver_opts:
            lines.append(f"driver_opts = {inline_table(host.platform.driver_opts)}")
    inventory = paths.state / "inventory.toml"
    inventory.write_text("\n".join(lines) + "\n")
    return inventory


def lab_description(paths: LabPaths, hosts: list[Host]) -> dict[str, object]:
    """What lab.json holds: the contract's keys, plus a few extras (spec, driver_opts, uname, data_root) for tests."""
    return {
        "registry": REGISTRY,
        "ca": str(ca_cert(paths)),
        "state_dir": str(paths.state),
        "ssh_key": str(lab_key(paths)),
        "known_hosts": str(paths.state / "known_hosts"),
        "ssh_config": str(paths.state / "ssh_config"),
        "inventory": str(paths.state / "inventory.toml"),
        "buildkitd_config": str(paths.state / "buildkitd.toml"),
        "busybox_image": f"{REGISTRY}/lab/busybox:stable",
        "spec": spec_of(hosts),
        "hosts": [
            {
                "name": h.name,
                "address": h.address,
                "platform": h.platform.platform,
                "user": LAB_USER,
                "port": 22,
                "netns": h.netns,
                "docker_host": f"unix://{engine_socket(paths, h)}",
                "buildkit_image": h.buildkit_image,
                "driver_opts": h.platform.driver_opts,
                "uname": h.platform.uname,
                "data_root": str(data_root(paths, h)),
                "data_root_size": h.data_root_size,  # bytes of the tmpfs under data_root (`--small-disk`), or None
            }
            for h in hosts
        ],
    }


def write_lab_json(paths: LabPaths, hosts: list[Host]) -> dict[str, object]:
    description = lab_description(paths, hosts)
    tmp = paths.lab_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(description, indent=2) + "\n")
    tmp.rename(paths.lab_json)
    return description


def read_lab_json(paths: LabPaths) -> dict[str, object] | None:
    try:
        description: dict[str, object] = json.loads(paths.lab_json.read_text())
    except (OSError, ValueError):
        return None
    return description
