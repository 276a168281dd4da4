"""buildx's OpenSSH path must verify host keys as strictly as nodefleet: what `ssh -G` says, judged (pure), and the
real `ssh -G` of this machine's OpenSSH against a config that turns checking off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nodefleet.errors import UsageError
from nodefleet.host.openssh import (
    openssh_argv,
    openssh_config_argv,
    parse_openssh_config,
    strictness_problem,
    takes_unknown_keys,
)
from nodefleet.target import SSHTarget

TARGET = SSHTarget("a", "10.0.0.1", user="builder", port=2222)
G = """user builder
hostname 10.0.0.1
port 2222
stricthostkeychecking {strict}
userknownhostsfile {files}
globalknownhostsfile /etc/ssh/ssh_known_hosts
"""


@pytest.mark.parametrize(
    ("strict", "files", "problem"),
    [
        ("true", "/root/.ssh/known_hosts", None),
        ("accept-new", "/root/.ssh/known_hosts", None),  # safe only with the verified key there: checked with the key
        ("ask", "/root/.ssh/known_hosts", None),
        ("false", "/root/.ssh/known_hosts", "StrictHostKeyChecking no for 10.0.0.1 in ~/.ssh/config"),
        ("true", "/dev/null", None),  # the global file is still read
    ],
)
def test_strictness_problem(strict: str, files: str, problem: str | None) -> None:
    config = parse_openssh_config(G.format(strict=strict, files=files))
    found = strictness_problem(config, TARGET)
    assert (found is None) == (problem is None), found
    if problem:
        assert problem in (found or "")


def test_no_known_hosts_file_at_all_is_a_problem() -> None:
    config = parse_openssh_config(
        "stricthostkeychecking true\nuserknownhostsfile /dev/null\nglobalknownhostsfile none\n"
    )
    assert "UserKnownHostsFile /dev/null none" in (strictness_problem(config, TARGET) or "")


def test_parse_uses_the_host_key_alias_and_port() -> None:
    config = parse_openssh_config("hostname 10.0.0.1\nhostkeyalias build-a\nport 2222\nstricthostkeychecking true\n")
    assert (config.host, config.port) == ("build-a", 2222)


def test_nodefleets_own_openssh_checks_keys_strictly_against_the_inventorys_file() -> None:
    argv = openssh_argv(SSHTarget("a", "10.0.0.1", known_hosts=Path("/lab/known hosts")), "true")
    assert argv[argv.index("StrictHostKeyChecking=yes") - 1] == "-o"
    assert 'UserKnownHostsFile="/lab/known hosts"' in argv


def test_real_ssh_G_reports_a_config_that_turns_checking_off(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host 10.0.0.1\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n")
    argv = openssh_config_argv(TARGET)
    argv[1:1] = ["-F", str(home / ".ssh" / "config")]  # the same file, named: ssh reads ~ from the passwd entry
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10)
    config = parse_openssh_config(done.stdout)
    assert config.strict == "false"
    assert "StrictHostKeyChecking no " in (strictness_problem(config, TARGET) or "")  # as written, not ssh -G's word


def test_a_known_hosts_path_reaches_openssh_as_one_literal_value() -> None:
    argv = openssh_argv(SSHTarget("a", "10.0.0.1", known_hosts=Path("/lab/100%/known_hosts")), "true")
    assert "UserKnownHostsFile=/lab/100%%/known_hosts" in argv
    with pytest.raises(UsageError, match="double quote"):
        openssh_argv(SSHTarget("a", "10.0.0.1", known_hosts=Path('/lab/"x"/known_hosts')), "true")


@pytest.mark.parametrize(("strict", "takes"), [("true", False), ("ask", False), ("accept-new", True), ("false", True)])
def test_only_an_openssh_that_takes_an_unknown_key_reaches_a_host_missing_from_its_files(
    strict: str, takes: bool
) -> None:
    # A host whose verified key is not in OpenSSH's known_hosts: with accept-new buildx would reach whatever answers
    # (the host leaves the builder); a strict OpenSSH refuses it, and the builder stays as it is.
    config = parse_openssh_config(G.format(strict=strict, files="/root/.ssh/known_hosts"))
    assert takes_unknown_keys(config) is takes


def test_the_inventory_refuses_a_known_hosts_path_openssh_cannot_take() -> None:
    from nodefleet.errors import InventoryError
    from nodefleet.inventory import parse_inventory

    document = {"defaults": {"known_hosts": '/lab/"x"'}, "hosts": [{"name": "a", "address": "10.0.0.1"}]}
    with pytest.raises(InventoryError, match=r"defaults\.known_hosts: .*OpenSSH cannot be given a path with a double"):
        parse_inventory(document, Path("/lab/inventory.toml"))
