"""Property tests: no inventory, however malformed, gives a traceback; what passes is inert in a shell."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodefleet.errors import InventoryError
from nodefleet.inventory import Inventory, load_inventory, parse_inventory

PATH = Path("/fleet/inventory.toml")
NASTY = st.sampled_from(
    [
        *["a;b", "$(id)", "`x`", "a b", "-oProxyCommand=x", "x\ny", "ARM64", "", "..", "a|b", "é", "*"],
        # A trailing newline passed `^...$` with re.match, any text passed as an IPv6 zone id, and `~user` for
        # an unknown user raised from pathlib.
        *["arm64\n", "fe80::1%$(id) x", "~nosuchuser-nodefleet/key"],
    ]
)
SCALARS = st.one_of(
    st.text(max_size=12),
    NASTY,
    st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True),
    st.integers(min_value=-5, max_value=70000),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
HOST_KEYS = st.sampled_from(
    [
        "name",
        "address",
        "user",
        "port",
        "identity_file",
        "platforms",
        "labels",
        "enabled",
        "buildkit_image",
        "driver_opts",
        "bogus",
    ]
)
HOSTS = st.dictionaries(HOST_KEYS, VALUES, max_size=6)
DEFAULT_KEYS = st.sampled_from(
    ["user", "port", "connect_timeout", "parallel", "buildkit_image", "driver_opts", "known_hosts", "bogus"]
)
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "builder": st.dictionaries(st.sampled_from(["name", "other"]), VALUES, max_size=2) | VALUES,
        "defaults": st.dictionaries(DEFAULT_KEYS, VALUES, max_size=4) | VALUES,
        "hosts": st.lists(HOSTS, max_size=4) | VALUES,
        "registries": st.dictionaries(st.text(max_size=10), VALUES, max_size=2),
        "extra": VALUES,
    },
)


def _shell_values(inventory: Inventory) -> list[str]:
    values = [inventory.builder]
    for host in inventory.hosts:
        values += [host.name, host.address, host.buildkit_image, *host.platforms]
        values += [value for value in (host.user,) if value]
        values += [*host.driver_opts, *host.driver_opts.values(), *host.labels, *host.labels.values()]
    return values


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_document_validates_or_fails_with_one_line_per_problem(document: dict[str, Any]) -> None:
    try:
        inventory = parse_inventory(document, PATH)
    except InventoryError as exc:
        assert exc.problems
        for line in exc.problems:
            assert line.startswith(f"{PATH}: ")
            assert "\n" not in line and "\r" not in line
        return
    for value in _shell_values(inventory):
        assert shlex.quote(value) == value, value  # nothing a shell would read as more than a word


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_file_content_is_an_inventory_error_or_loads(tmp_path_factory: Any, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("inv") / "inventory.toml"
    path.write_bytes(raw)
    try:
        load_inventory(path)
    except InventoryError as exc:
        assert all("\n" not in line for line in exc.problems)


def test_cli_bad_inventory_exits_2_with_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text('[[hosts]]\nname = "a;b"\naddress = "$(reboot)"\nport = "22"\n')
    for command in (["up"], ["status"], ["down"], ["inventory", "check"]):
        completed = subprocess.run(
            [sys.executable, "-m", "nodefleet", *command, "-i", str(path)], capture_output=True, text=True, check=False
        )
        assert completed.returncode == 2, completed.stderr
        assert "Traceback" not in completed.stderr
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 3 and all(line.startswith(f"nodefleet: {path}: hosts[0]") for line in lines), lines


def test_cli_usage_error_exits_2(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "nodefleet", "up", "--parallel", "0"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
