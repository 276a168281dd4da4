"""The Ansible inventory export: hosts, connection settings, groups, and the YAML text Ansible reads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from nodefleet.export import (
    DISABLED_GROUP,
    PARENT_GROUP,
    ansible_inventory,
    label_group,
    platform_group,
    render_ansible_inventory,
)
from nodefleet.inventory import Inventory, load_inventory, parse_inventory

ROOT = Path(__file__).resolve().parents[2]
# What Ansible accepts as a group name without warning or rewriting it.
ANSIBLE_GROUP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def make(data: dict[str, Any], path: Path = Path("/srv/fleet/inventory.toml")) -> Inventory:
    return parse_inventory(data, path)


def groups(inventory: Inventory) -> dict[str, Any]:
    result: dict[str, Any] = ansible_inventory(inventory)["all"]["children"]
    return result


LAB_LIKE: dict[str, Any] = {
    "builder": {"name": "nflab"},
    "defaults": {
        "user": "builder",
        "port": 22,
        "identity_file": "/var/lib/nodefleet-lab/id_ed25519",
        "known_hosts": "/var/lib/nodefleet-lab/known_hosts",
        "connect_timeout": 5,
        "buildkit_image": "10.231.0.1:5443/lab/buildkit:v0.13.2-amd64",
    },
    "hosts": [
        {"name": "amd64-1", "address": "10.231.0.11", "platforms": ["linux/amd64"], "labels": {"site": "lab"}},
        {
            "name": "arm64-1",
            "address": "10.231.0.12",
            "platforms": ["arm64"],
            "labels": {"site": "lab", "board": "rpi5"},
            "buildkit_image": "10.231.0.1:5443/lab/buildkit:v0.13.2-arm64",
        },
        {
            "name": "armv7-1",
            "address": "10.231.0.13",
            "platforms": ["linux/arm/v7"],
            "user": "pi",
            "port": 2222,
            "enabled": False,
        },
    ],
}


def test_enabled_hosts_carry_connection_settings_and_role_vars() -> None:
    hosts = groups(make(LAB_LIKE))[PARENT_GROUP]["hosts"]
    assert list(hosts) == ["amd64-1", "arm64-1"]
    assert hosts["amd64-1"] == {
        "ansible_host": "10.231.0.11",
        "ansible_user": "builder",
        "ansible_port": 22,
        "ansible_ssh_private_key_file": "/var/lib/nodefleet-lab/id_ed25519",
        "nodefleet_buildkit_image": "10.231.0.1:5443/lab/buildkit:v0.13.2-amd64",
        "nodefleet_platforms": ["linux/amd64"],
        "nodefleet_labels": {"site": "lab"},
    }
    # Per-host image overrides the default; platforms arrive normalized.
    assert hosts["arm64-1"]["nodefleet_buildkit_image"].endswith("-arm64")
    assert hosts["arm64-1"]["nodefleet_platforms"] == ["linux/arm64"]


def test_unset_user_port_and_key_are_left_to_ssh_config() -> None:
    inventory = make({"hosts": [{"name": "a", "address": "a.example.com"}]})
    host = groups(inventory)[PARENT_GROUP]["hosts"]["a"]
    assert host == {"ansible_host": "a.example.com", "nodefleet_buildkit_image": "moby/buildkit:buildx-stable-1"}


def test_platform_and_label_groups_are_children_of_the_parent_group() -> None:
    children = groups(make(LAB_LIKE))[PARENT_GROUP]["children"]
    assert children == {
        "label_board_rpi5": {"hosts": {"arm64-1": {}}},
        "label_site_lab": {"hosts": {"amd64-1": {}, "arm64-1": {}}},
        "platform_linux_amd64": {"hosts": {"amd64-1": {}}},
        "platform_linux_arm64": {"hosts": {"arm64-1": {}}},
    }


def test_disabled_hosts_are_only_in_the_disabled_group() -> None:
    top = groups(make(LAB_LIKE))
    assert list(top) == [PARENT_GROUP, DISABLED_GROUP]
    assert list(top[DISABLED_GROUP]["hosts"]) == ["armv7-1"]
    disabled = top[DISABLED_GROUP]["hosts"]["armv7-1"]
    assert disabled["ansible_user"] == "pi"
    assert disabled["ansible_port"] == 2222
    assert "armv7-1" not in top[PARENT_GROUP]["hosts"]
    for child in top[PARENT_GROUP]["children"].values():
        assert "armv7-1" not in child["hosts"]
    # Its pinned platform makes no group: no enabled host has it.
    assert "platform_linux_arm_v7" not in top[PARENT_GROUP]["children"]
    # Still reachable with the same connection settings.
    assert top[DISABLED_GROUP]["vars"] == top[PARENT_GROUP]["vars"]


def test_no_disabled_group_and_no_children_when_not_needed() -> None:
    top = groups(make({"hosts": [{"name": "a", "address": "10.0.0.1"}]}))
    assert list(top) == [PARENT_GROUP]
    assert "children" not in top[PARENT_GROUP]


def test_group_vars_keep_host_keys_verified_against_the_inventorys_known_hosts() -> None:
    variables = groups(make(LAB_LIKE))[PARENT_GROUP]["vars"]
    assert variables["nodefleet_builder"] == "nflab"
    assert shlex.split(variables["ansible_ssh_common_args"]) == [
        "-o",
        "UserKnownHostsFile=/var/lib/nodefleet-lab/known_hosts",
    ]
    assert "StrictHostKeyChecking" not in variables["ansible_ssh_common_args"]
    assert variables["ansible_timeout"] == 5


def test_known_hosts_path_with_spaces_is_one_ssh_option_value() -> None:
    inventory = make(
        {
            "defaults": {"known_hosts": "/home/me/my keys/known_hosts", "connect_timeout": 2.5},
            "hosts": [{"name": "a", "address": "10.0.0.1"}],
        }
    )
    variables = groups(inventory)[PARENT_GROUP]["vars"]
    # Ansible shlex-splits the args; ssh_config then groups the double-quoted path.
    assert shlex.split(variables["ansible_ssh_common_args"]) == [
        "-o",
        'UserKnownHostsFile="/home/me/my keys/known_hosts"',
    ]
    assert variables["ansible_timeout"] == 3


def test_no_known_hosts_means_no_ssh_args() -> None:
    variables = groups(make({"hosts": [{"name": "a", "address": "10.0.0.1"}]}))[PARENT_GROUP]["vars"]
    assert "ansible_ssh_common_args" not in variables


def test_registry_cas_and_image_archive_become_role_inputs() -> None:
    inventory = make(
        {
            "defaults": {"buildkit_image_archive": "images/buildkit.tar"},
            "registries": {
                "registry.example.com:5000": {"ca_file": "certs/ca.crt"},
                "mirror.example.com": {"insecure": True},
            },
            "hosts": [{"name": "a", "address": "10.0.0.1"}],
        }
    )
    variables = groups(inventory)[PARENT_GROUP]["vars"]
    assert variables["nodefleet_registry_cas"] == [
        {"registry": "registry.example.com:5000", "ca_file": "/srv/fleet/certs/ca.crt"}
    ]
    assert variables["nodefleet_buildkit_image_archive"] == "/srv/fleet/images/buildkit.tar"


def test_relative_inventory_paths_become_absolute(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    inventory = make(
        {"defaults": {"identity_file": "keys/id"}, "hosts": [{"name": "a", "address": "10.0.0.1"}]},
        path=Path("inventory.toml"),
    )
    host = groups(inventory)[PARENT_GROUP]["hosts"]["a"]
    assert host["ansible_ssh_private_key_file"] == str(tmp_path / "keys" / "id")


def test_group_names_are_ansible_safe() -> None:
    assert platform_group("linux/arm/v7") == "platform_linux_arm_v7"
    assert label_group("site", "lab") == "label_site_lab"
    assert label_group("rack.row", "a-1/b") == "label_rack_row_a_1_b"


@given(
    name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,20}", fullmatch=True),
    value=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,20}", fullmatch=True),
)
def test_every_label_the_inventory_accepts_makes_a_valid_group(name: str, value: str) -> None:
    inventory = make({"hosts": [{"name": "a", "address": "10.0.0.1", "labels": {name: value}}]})
    for group in groups(inventory)[PARENT_GROUP]["children"]:
        assert ANSIBLE_GROUP_RE.match(group), group


def test_render_is_yaml_of_the_mapping_with_a_header_and_no_aliases() -> None:
    inventory = make(
        {
            "defaults": {"known_hosts": "/k"},
            "registries": {"r.example.com": {"ca_file": "/ca.crt"}},
            "hosts": [{"name": "a", "address": "10.0.0.1"}, {"name": "b", "address": "10.0.0.2", "enabled": False}],
        }
    )
    text = render_ansible_inventory(inventory)
    assert text.startswith("# Ansible inventory generated by nodefleet from /srv/fleet/inventory.toml\n")
    assert yaml.safe_load(text) == ansible_inventory(inventory)
    # The CA list is shared by both groups; it is written out twice, not as an &anchor.
    assert "&" not in text
    assert "*" not in text


def test_render_is_deterministic() -> None:
    assert render_ansible_inventory(make(LAB_LIKE)) == render_ansible_inventory(make(LAB_LIKE))


def test_the_documented_example_inventory_exports() -> None:
    inventory = load_inventory(ROOT / "inventory.example.toml")
    top = groups(inventory)
    assert set(top[PARENT_GROUP]["hosts"]) == {host.name for host in inventory.enabled_hosts}
    assert set(top[DISABLED_GROUP]["hosts"]) == {host.name for host in inventory.hosts if not host.enabled}
    assert "platform_linux_arm64" in top[PARENT_GROUP]["children"]
    assert "label_site_lab" in top[PARENT_GROUP]["children"]
