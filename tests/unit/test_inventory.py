"""Inventory validation: every problem is one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodefleet.errors import InventoryError
from nodefleet.inventory import DEFAULT_BUILDKIT_IMAGE, load_inventory

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(write(tmp_path, text))
    return caught.value.problems


def test_example_inventory_loads() -> None:
    inventory = load_inventory(REPO / "inventory.example.toml")
    assert inventory.builder == "fleet"
    assert [host.name for host in inventory.hosts] == ["amd64-1", "arm64-1", "armv7-1"]
    assert [host.name for host in inventory.enabled_hosts] == ["amd64-1", "arm64-1"]
    armv7 = inventory.hosts[2]
    assert armv7.user == "pi" and armv7.port == 2222
    assert dict(armv7.driver_opts) == {"memory": "4g", "env.GOMAXPROCS": "1"}
    assert inventory.registries[0].ca_file == REPO / "certs/registry-ca.crt"


def test_defaults_apply_to_hosts(tmp_path: Path) -> None:
    inventory = load_inventory(
        write(
            tmp_path,
            """
[defaults]
user = "ci"
port = 2200
identity_file = "keys/id"
[[hosts]]
name = "a"
address = "10.0.0.1"
[[hosts]]
name = "b"
address = "b.example.com"
user = "other"
platforms = ["arm64", "linux/arm"]
""",
        )
    )
    first, second = inventory.hosts
    assert (first.user, first.port, first.identity_file) == ("ci", 2200, tmp_path / "keys/id")
    assert second.user == "other"
    assert second.platforms == ("linux/arm64", "linux/arm/v7")
    assert first.buildkit_image == DEFAULT_BUILDKIT_IMAGE
    assert inventory.builder == "nodefleet"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[hosts]]\nname = "a"\naddress = "h"\nport = 70000', "hosts[0] (a).port: must be an integer from 1 to 65535"),
        ('[[hosts]]\nname = "a"\naddress = "h"\nport = true', "hosts[0] (a).port: must be an integer"),
        ('[[hosts]]\nname = "Arm64"\naddress = "h"', "use 'arm64'"),
        ('[[hosts]]\nname = "a"\naddress = "h; rm -rf /"', "is not a hostname or IP address"),
        ('[[hosts]]\nname = "a"\naddress = "-oProxyCommand=x"', "is not a hostname or IP address"),
        ('[[hosts]]\nname = "a"\naddress = "h"\nuser = "$(id)"', "(a).user: '$(id)' is not a valid user name"),
        ('[[hosts]]\nname = "a"\naddress = "h"\ncolour = "red"', "hosts[0].colour: unknown key"),
        ('[[hosts]]\nname = "a"', "hosts[0] (a): missing required key address"),
        ('[[hosts]]\naddress = "h"', "hosts[0]: missing required key name"),
        ('[[hosts]]\nname = "a"\naddress = "h"\nplatforms = ["linux/arm64", "arm64"]', "lists a platform twice"),
        ('[[hosts]]\nname = "a"\naddress = "h"\nplatforms = "arm64"', "platforms: must be an array of strings"),
        ('[[hosts]]\nname = "a"\naddress = "h"\nbuildkit_image = "x y"', "is not an image reference"),
        (
            '[[hosts]]\nname = "a"\naddress = "h"\ndriver_opts = { image = "x" }',
            "driver_opts.image: is set by nodefleet",
        ),
        ('[[hosts]]\nname = "a"\naddress = "h"\ndriver_opts = { "env.X" = "a b" }', "cannot carry"),
        ('[[hosts]]\nname = "a"\naddress = "h"\nenabled = "yes"', "(a).enabled: must be true or false"),
        (
            "[defaults]\nconnect_timeout = -1\n[[hosts]]\nname='a'\naddress='h'",
            "defaults.connect_timeout: must be a positive",
        ),
        (
            "[defaults]\nparallel = 1.5\n[[hosts]]\nname='a'\naddress='h'",
            "defaults.parallel: must be a positive integer",
        ),
        ('[builder]\nname = "My Builder"\n[[hosts]]\nname="a"\naddress="h"', "builder.name:"),
        ("hosts = 3", "hosts: must be an array of tables"),
        ("", "hosts: no hosts"),
        ('[registries."bad host"]\n[[hosts]]\nname="a"\naddress="h"', 'registries."bad host": must be a registry host'),
        (
            "[[hosts]]\nname = 'a'\naddress = 'h'\n[[hosts]]\nname = 'a'\naddress = 'i'",
            "hosts[1].name: duplicate host name 'a'",
        ),
        ("[[hosts]]\nname = 'a'\naddress = 'h'\n[[hosts]]\nname = 'b'\naddress = 'H'", "duplicate address 'H'"),
    ],
)
def test_each_problem_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in line for line in found), found
    for line in found:
        assert "\n" not in line
        assert line.startswith(f"{tmp_path / 'inventory.toml'}: ")


def test_same_address_on_other_ports_is_fine(tmp_path: Path) -> None:
    inventory = load_inventory(
        write(tmp_path, "[[hosts]]\nname='a'\naddress='h'\nport=22\n[[hosts]]\nname='b'\naddress='h'\nport=2222")
    )
    assert len(inventory.hosts) == 2


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "[[hosts]\nname = 'a'")
    assert len(found) == 1
    assert "TOML syntax" in found[0] and "line 1" in found[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no such file"):
        load_inventory(tmp_path / "nope.toml")


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    found = problems(tmp_path, "[[hosts]]\nname = 'A'\naddress = 'x y'\nport = 0\nfoo = 1")
    assert len(found) == 4
