"""Property tests: every inventory value reaches a remote shell, OpenSSH or buildx as exactly one word.

Three levels:
- generated VALID inventories (1,000 per run) go through parse_inventory into every remote shell command, every
  OpenSSH argv and every buildx argv nodefleet builds from them; each value comes out as exactly one token
  (shlex, with shell punctuation split off) or one argv element, in the place it belongs;
- the remote scripts (host/scripts/*.sh, their arguments quoted in a `set --` line before them) run under bash,
  dash and busybox sh with a stub `docker` that records its argv, fed ARBITRARY text (the second line of defence,
  should validation ever let something through): the argv is exactly the value;
- OpenSSH itself parses the argv nodefleet gives it (`ssh -G`, which resolves and never connects).
"""

from __future__ import annotations

import csv
import functools
import ipaddress
import os
import re
import shlex
import socket
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodefleet.build.argv import platform_argv
from nodefleet.build.cmdline import parse_request
from nodefleet.buildx import argv as buildx
from nodefleet.buildx.argv import imagetools_create_argv, imagetools_inspect_argv
from nodefleet.buildx.config import render_buildkitd_config
from nodefleet.buildx.helpers import helper_name
from nodefleet.buildx.nodes import DIGEST_OPT, DRIVER, container_name, node_spec, state_volume_name
from nodefleet.errors import InventoryError
from nodefleet.fleet.plan import assign_pins
from nodefleet.host.facts import Facts, probe_script
from nodefleet.host.openssh import openssh_argv
from nodefleet.host.ops import image_present_command, image_pull_command, remove_node_command
from nodefleet.host.scripts import script_text
from nodefleet.inventory import Inventory, parse_inventory
from nodefleet.target import ssh_target, target_from_endpoint
from tests.unit.shells import SHELL_NAMES, shell_argv

PATH = Path("/fleet/inventory.toml")

# ---------------------------------------------------------------------------------------------- valid inventories

NAMES = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,12}", fullmatch=True)
HOSTNAMES = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,16}", fullmatch=True).filter(lambda text: ".." not in text)
ADDRESSES = st.one_of(
    HOSTNAMES, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda address: address.compressed)
)
USERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,15}", fullmatch=True)
PORTS = st.integers(min_value=1, max_value=65535)
IMAGES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,24}", fullmatch=True)
OPT_KEYS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True).filter(lambda key: key != "image")
OPT_VALUES = st.from_regex(r"[A-Za-z0-9._:/=@+-]{0,12}", fullmatch=True)
DRIVER_OPTS = st.dictionaries(OPT_KEYS, OPT_VALUES, max_size=3)
LABELS = st.dictionaries(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,10}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,10}", fullmatch=True),
    max_size=2,
)
PLATFORMS = st.lists(
    st.sampled_from(["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/riscv64", "linux/386"]),
    max_size=2,
    unique=True,
)
# Paths may hold anything but control characters: quotes, spaces, `$(...)`, `;`, backslashes, any script.
PATH_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=16).filter(
    lambda text: not text.startswith("~")
)
REGISTRY_HOSTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,12}(:[0-9]{1,5})?", fullmatch=True)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


DEFAULTS = _optional(
    user=USERS,
    port=PORTS,
    identity_file=PATH_TEXT,
    known_hosts=PATH_TEXT.filter(lambda text: '"' not in text),  # refused: OpenSSH cannot take it (test_inventory)
    connect_timeout=st.floats(min_value=0.1, max_value=60),
    buildkit_image=IMAGES,
    buildkit_image_archive=PATH_TEXT,
    driver_opts=DRIVER_OPTS,
    buildkitd_config=PATH_TEXT,
)
HOST_EXTRAS = _optional(
    user=USERS,
    port=PORTS,
    identity_file=PATH_TEXT,
    platforms=PLATFORMS,
    labels=LABELS,
    enabled=st.booleans(),
    buildkit_image=IMAGES,
    driver_opts=DRIVER_OPTS,
)
REGISTRY = _optional(ca_file=PATH_TEXT, mirrors=st.lists(REGISTRY_HOSTS, max_size=2), insecure=st.booleans())


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid inventory document: unique names and addresses, every optional key sometimes present."""
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    addresses = draw(
        st.lists(ADDRESSES, min_size=len(names), max_size=len(names), unique_by=lambda address: address.lower())
    )
    hosts = [
        {"name": name, "address": address, **draw(HOST_EXTRAS)} for name, address in zip(names, addresses, strict=True)
    ]
    document: dict[str, Any] = {"builder": {"name": draw(NAMES)}, "defaults": draw(DEFAULTS), "hosts": hosts}
    registries = draw(st.dictionaries(REGISTRY_HOSTS, REGISTRY, max_size=2))
    if registries:
        document["registries"] = registries
    return document


# ---------------------------------------------------------------------------------------------- checking commands


def words(command: str) -> list[str]:
    """A command's words as sh splits them, shell punctuation (; | & ( ) < >) split off as words of its own."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def substitutions(script: str) -> list[str]:
    """The commands inside each `$(...)` of a script (quote-aware; the scripts do not nest them)."""
    found = []
    index = 0
    while (start := script.find("$(", index)) != -1:
        depth, position, quote = 1, start + 2, ""
        while depth:
            char = script[position]
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            position += 1
        found.append(script[start + 2 : position - 1])
        index = position
    return found


@functools.lru_cache(maxsize=4096)
def simple_commands(script: str) -> tuple[str, ...]:
    """Every command of a script: the top-level lines and the commands substituted inside them."""
    commands = list(substitutions(script))
    for line in script.splitlines():
        outer = line
        for inner in substitutions(line):
            outer = outer.replace(f"$({inner})", "SUBSTITUTED")
        if outer.strip():
            commands.append(outer)
    return tuple(commands)


def assert_one_word(script: str, value: str, *, after: tuple[str, ...]) -> None:
    """`value` enters the script only quoted (or shell-safe), and some command has it as one whole word right
    after the words `after` (e.g. ("docker", "pull", "-q"))."""
    quoted = shlex.quote(value)
    assert quoted in script, (value, script)
    for text in simple_commands(script):
        if quoted not in text:
            continue
        command = words(text)
        for index in range(len(command) - len(after)):
            if tuple(command[index : index + len(after)]) == after and command[index + len(after)] == value:
                return
    raise AssertionError(f"{value!r} is not one word after {' '.join(after)} in:\n{script}")


def assert_argument(script: str, name: str, value: str, position: int) -> None:
    """`script` is host/scripts/<name>.sh after one `set --` line, and `value` is one whole word of that line, its
    positional parameter `position` (1-based): the only way a value enters a remote script."""
    first, newline, rest = script.partition("\n")
    assert newline and rest == script_text(name), script
    command = words(first)
    assert command[:2] == ["set", "--"] and first.startswith("set -- "), first
    assert command[1 + position] == value, (value, first)
    assert shlex.quote(value) in first, (value, first)


def assert_option(argv: list[str], option: str, value: str) -> None:
    """`option value` in an argv: the value is the one element after the option."""
    positions = [index for index, word in enumerate(argv) if word == option]
    assert any(argv[index + 1] == value for index in positions), (option, value, argv)


def remote_commands(inventory: Inventory) -> list[tuple[str, str, tuple[str, ...]]]:
    """(command, value, words before the value) for every one-line remote command nodefleet builds from the
    inventory."""
    checks: list[tuple[str, str, tuple[str, ...]]] = []
    for host in inventory.hosts:
        checks += [
            (image_present_command(host.buildkit_image), host.buildkit_image, ("docker", "image", "inspect")),
            (image_pull_command(host.buildkit_image), host.buildkit_image, ("docker", "pull", "-q")),
        ]
    return checks


def remote_scripts(inventory: Inventory) -> list[tuple[str, str, str, int]]:
    """(script, script name, value, its positional parameter) for every remote script nodefleet builds from the
    inventory (which docker command each parameter reaches is checked under real shells below)."""
    checks: list[tuple[str, str, str, int]] = []
    for host in inventory.hosts:
        container = container_name(host.name)
        for facts in Facts:
            probe = probe_script(container, image=host.buildkit_image, facts=facts)
            checks += [(probe, "probe", container, 1), (probe, "probe", host.buildkit_image, 4)]
            checks.append((probe, "probe", facts.value, 5))
        for keep_state in (True, False):
            remove = remove_node_command(host.name, keep_state=keep_state)
            checks.append((remove, "remove_node", container, 1))
            checks.append((remove, "remove_node", "" if keep_state else state_volume_name(host.name), 2))
    return checks


def check_openssh(inventory: Inventory) -> None:
    for host in inventory.hosts:
        target = ssh_target(inventory, host)
        argv = openssh_argv(target, "docker", "system", "dial-stdio")
        separator = argv.index("--")
        # The address is the one word after `--`: never read as an option, whatever it looks like.
        assert argv[separator + 1 :] == [host.address, "docker", "system", "dial-stdio"]
        # Before `--` only nodefleet's own options, each value the one word after its option.
        index = 1
        while index < separator:
            assert argv[index] in {"-o", "-l", "-p", "-T"}, argv
            index += 2 if argv[index] in {"-o", "-l", "-p"} else 1
        if host.user:
            assert_option(argv[:separator], "-l", host.user)
        if host.port:
            assert_option(argv[:separator], "-p", str(host.port))
        options = dict(argv[index + 1].split("=", 1) for index, word in enumerate(argv[:separator]) if word == "-o")
        assert set(options) <= {"BatchMode", "ConnectTimeout", "StrictHostKeyChecking", "UserKnownHostsFile"}, argv
        assert options.get("StrictHostKeyChecking", "yes") == "yes", argv
        if "UserKnownHostsFile" in options:  # the inventory's known_hosts, as one ssh_config value
            assert target.known_hosts is not None, argv
            literal = str(target.known_hosts).replace("%", "%%")  # `%` starts an ssh_config token
            assert options["UserKnownHostsFile"] in {literal, f'"{literal}"'}, argv


def check_buildx(inventory: Inventory, config: Path | None) -> None:
    builder = inventory.builder
    hosts = inventory.enabled_hosts
    pins = assign_pins([(host.name, host.platforms) for host in hosts])
    for host in hosts:
        spec = node_spec(host, pins[host.name], config, "digest")
        for append in (False, True):
            argv = buildx.create_argv(builder, spec, append=append)
            assert argv[:3] == ["docker", "buildx", "create"]
            assert_option(argv, "--name", builder)
            assert_option(argv, "--node", host.name)
            assert_option(argv, "--driver", DRIVER)
            if spec.platforms:
                assert_option(argv, "--platform", ",".join(spec.platforms))
                assert argv[argv.index("--platform") + 1].split(",") == list(spec.platforms)
            opts = [argv[index + 1] for index, word in enumerate(argv) if word == "--driver-opt"]
            # buildx reads each --driver-opt as CSV: one field, key before the first '='.
            parsed = {}
            for opt in opts:
                (field,) = next(csv.reader([opt]))
                key, _, value = field.partition("=")
                parsed[key] = value
            # The config's digest rides along as a driver option BuildKit ignores (DIGEST_OPT).
            assert parsed == {"image": host.buildkit_image, **host.driver_opts, DIGEST_OPT: "digest"}
            if config is not None:
                assert_option(argv, "--buildkitd-config", str(config))
            # The endpoint is the last word and parses back to the host (target_from_endpoint relies on it).
            assert argv[-1] == spec.endpoint
            parts = urlsplit(spec.endpoint)
            assert parts.scheme == "ssh" and parts.hostname == host.address.lower()
            assert parts.username == host.user and parts.port == host.port
            back = target_from_endpoint(inventory, host.name, spec.endpoint)
            assert back is not None and back.address.lower() == host.address.lower()
        assert buildx.leave_argv(builder, host.name)[-3:] == ["--node", host.name, "--leave"]
        helper = helper_name(builder, host.name)
        assert buildx.rm_argv(helper, keep_state=True, keep_daemon=True)[-1] == helper
        check_build(builder, helper, host.platforms[0] if host.platforms else "linux/amd64")
    assert buildx.bootstrap_argv(builder)[-2:] == ["--builder", builder]
    assert buildx.rm_argv(builder, keep_state=False)[-1] == builder


def check_build(builder: str, helper: str, platform: str) -> None:
    request = parse_request(["-t", "reg.example/app:1", "--push", "ctx dir"], platforms=[platform])
    argv = platform_argv(request, platform, helper, platforms=1, metadata_file="/tmp/m.json", progress="plain")
    assert_option(argv, "--builder", helper)
    assert_option(argv, "--platform", platform)
    assert argv[-2:] == ["--", "ctx dir"]
    assert_option(
        imagetools_create_argv(helper, ["reg.example/app:1"], ["reg.example/app@sha256:0"]), "--builder", helper
    )
    assert_option(imagetools_inspect_argv(helper, "reg.example/app:1"), "--builder", helper)


def check_buildkitd_config(inventory: Inventory) -> None:
    """The generated buildkitd.toml is TOML that says exactly what the inventory says, whatever the paths hold."""
    if not inventory.registries:
        return
    parsed = tomllib.loads(render_buildkitd_config(inventory.registries))
    assert set(parsed["registry"]) == {registry.host for registry in inventory.registries}
    for registry in inventory.registries:
        settings_ = parsed["registry"][registry.host]
        assert settings_.get("mirrors", []) == list(registry.mirrors)
        assert settings_.get("ca", []) == ([str(registry.ca_file)] if registry.ca_file else [])
        assert settings_.get("insecure", False) == registry.insecure


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(documents())
def test_every_value_of_a_valid_inventory_reaches_commands_as_one_word(document: dict[str, Any]) -> None:
    inventory = parse_inventory(document, PATH)  # generated documents are valid: an error here is a finding
    for script, value, after in remote_commands(inventory):
        assert_one_word(script, value, after=after)
    for script, name, value, position in remote_scripts(inventory):
        assert_argument(script, name, value, position)
    check_openssh(inventory)
    check_buildx(inventory, inventory.defaults.buildkitd_config)
    check_buildkitd_config(inventory)


# ---------------------------------------------------------------------------------------------- real shells

ANY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=16
)
NASTY = st.sampled_from(
    ["a;b", "$(touch /tmp/pwned)", "`id`", "a b", "'", '"', "\\", "-rf", "x\ny", "*", "$HOME", "é", "\x81\x82\x88ā"]
)

STUB_INSTANCE = "a" * 64 + " 2026-01-01T00:00:00Z"  # what the stub's `docker inspect` says
STUB_DOCKER = """#!/bin/sh
printf '%s\\0' "$#" "$@" >> "$ARGV_LOG"
[ "$1 $2" = "container inspect" ] && exit 1
[ "$1 $2 $3 $4" = "inspect --type container -f" ] && echo "running STUB_INSTANCE"
exit 0
""".replace("STUB_INSTANCE", STUB_INSTANCE)
# The `docker inspect` format of probe.sh, as the script says it (the test checks it reaches docker whole).
INSPECT_FORMAT = re.search(r"^format='([^']*)'$", script_text("probe"), re.MULTILINE).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def stub_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stub-bin")
    docker = folder / "docker"
    docker.write_text(STUB_DOCKER)
    docker.chmod(0o755)
    return folder


def run_in_shell(shell: str, script: str, stub_bin: Path, log: Path) -> tuple[int, list[list[str]]]:
    """Run a script under a login shell as sshd would, and return its exit code and every docker argv it ran."""
    log.write_bytes(b"")
    completed = subprocess.run(
        shell_argv(shell, script),
        env={"PATH": f"{stub_bin}:{os.environ['PATH']}", "ARGV_LOG": str(log), "HOME": str(log.parent)},
        capture_output=True,
        timeout=30,
        check=False,
        cwd=log.parent,
    )
    fields = log.read_bytes().split(b"\0")[:-1]
    calls = []
    while fields:
        count = int(fields.pop(0))
        calls.append([field.decode("utf-8", "surrogateescape") for field in fields[:count]])
        del fields[:count]
    return completed.returncode, calls


def test_the_inspect_format_is_the_one_the_probe_parses() -> None:
    assert INSPECT_FORMAT.startswith("{{.State.Status}} {{.Id}} {{.State.StartedAt}} {{.Config.Image}} ")
    assert '"/var/lib/buildkit"' in INSPECT_FORMAT


@pytest.mark.parametrize("shell", SHELL_NAMES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=st.one_of(ANY_TEXT, NASTY), image=st.one_of(ANY_TEXT, NASTY))
def test_remote_commands_under_a_real_shell_pass_any_value_as_one_argument(
    stub_bin: Path, tmp_path_factory: pytest.TempPathFactory, shell: str, node: str, image: str
) -> None:
    log = tmp_path_factory.mktemp("sh") / "argv.log"
    container = container_name(node)
    volume = state_volume_name(node)
    expected = {
        probe_script(container, facts=Facts.NONE): [
            ["inspect", "--type", "container", "-f", INSPECT_FORMAT, container],
            ["exec", container, "buildctl", "debug", "info"],
            ["exec", container, "buildctl", "debug", "workers", "--format", "{{json .}}"],
        ],
        probe_script(container, known_instance=STUB_INSTANCE, facts=Facts.NONE): [
            ["inspect", "--type", "container", "-f", INSPECT_FORMAT, container]
        ],
        probe_script(container, image=image, known_instance=STUB_INSTANCE, facts=Facts.NONE): [
            ["inspect", "--type", "container", "-f", INSPECT_FORMAT, container],
            ["image", "inspect", image],  # the stub's container names no image: asked
        ],
        probe_script(container, image=image, known_instance=STUB_INSTANCE): [
            ["inspect", "--type", "container", "-f", INSPECT_FORMAT, container],
            ["image", "inspect", image],
            ["version", "--format", "server_version={{.Server.Version}}"],  # the stub's engine says no version
        ],
        image_present_command(image): [["image", "inspect", image]],
        image_pull_command(image): [["pull", "-q", image]],
        remove_node_command(node, keep_state=True): [
            ["version", "--format", "{{.Server.Version}}"],
            ["rm", "-f", container],
            ["container", "inspect", container],
        ],
        remove_node_command(node, keep_state=False): [
            ["version", "--format", "{{.Server.Version}}"],
            ["rm", "-f", container],
            ["volume", "rm", "-f", volume],
            ["container", "inspect", container],
        ],
    }
    for script, calls in expected.items():
        code, seen = run_in_shell(shell, script, stub_bin, log)
        assert seen == calls, script
        assert code == 0, script
    assert not (log.parent / "pwned").exists()


@pytest.mark.parametrize("shell", SHELL_NAMES)
def test_remove_command_fails_when_the_engine_does_not_answer_or_the_container_stays(
    tmp_path: Path, shell: str
) -> None:
    """`down` must not report a container removed that a stopped engine would start again."""
    script = remove_node_command("arm64-1", keep_state=False)
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in {
        "no-engine": "[ \"$1\" = version ] && { echo 'Cannot connect to the Docker daemon at unix:///x' >&2; exit 1; }",
        "stays": "exit 0",
        "gone": '[ "$1 $2" = "container inspect" ] && exit 1; exit 0',
    }.items():
        (folder / "docker").write_text(f"#!/bin/sh\n{body}\nexit 0\n")
        (folder / "docker").chmod(0o755)
        completed = subprocess.run(
            shell_argv(shell, script),
            env={"PATH": f"{folder}:{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if name == "gone":
            assert completed.returncode == 0, completed.stderr
        else:
            assert completed.returncode == 1, (name, completed.stderr)
            assert completed.stderr.strip(), name
    assert (
        "Cannot connect to the Docker daemon"
        in subprocess.run(
            shell_argv(shell, script),
            env={"PATH": f"{_engine_down(tmp_path)}:{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stderr
    )


def _engine_down(tmp_path: Path) -> Path:
    folder = tmp_path / "down-bin"
    folder.mkdir()
    (folder / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///x' >&2\nexit 1\n")
    (folder / "docker").chmod(0o755)
    return folder


# ---------------------------------------------------------------------------------------------- OpenSSH itself


def _same_address(resolved: str, address: str) -> bool:
    """OpenSSH (like getaddrinfo) may respell an address: `10.1` and `0` are legacy IPv4 numbers, IPv6 has
    several spellings. The same address, or the same name, is what counts."""
    try:
        return ipaddress.ip_address(resolved) == ipaddress.ip_address(address)
    except ValueError:
        pass
    try:
        return resolved == socket.inet_ntoa(socket.inet_aton(address))
    except OSError:
        return resolved == address.lower()


def _ssh_resolved(argv: list[str]) -> Mapping[str, str]:
    # -G prints the configuration OpenSSH would use and exits without connecting; -F /dev/null ignores
    # ~/.ssh/config so the test sees only what nodefleet passes.
    completed = subprocess.run(
        [argv[0], "-G", "-F", "/dev/null", *argv[1:]], capture_output=True, text=True, timeout=30, check=True
    )
    return dict(line.split(" ", 1) for line in completed.stdout.splitlines() if " " in line)


@settings(max_examples=60, deadline=None)
@given(address=ADDRESSES, user=st.one_of(st.none(), USERS), port=st.one_of(st.none(), PORTS))
def test_openssh_reads_the_address_user_and_port_nodefleet_passes(
    address: str, user: str | None, port: int | None
) -> None:
    from nodefleet.ssh import SSHTarget

    argv = openssh_argv(
        SSHTarget("h", address, user=user, port=port, connect_timeout=3), "docker", "system", "dial-stdio"
    )
    resolved = _ssh_resolved(argv)
    assert _same_address(resolved["hostname"], address), (resolved["hostname"], address)
    if user:
        assert resolved["user"] == user
    assert resolved["port"] == str(port or 22)
    assert resolved["batchmode"] == "yes"


# ---------------------------------------------------------------------------------------------- regressions


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", "arm64-1\n"),
        ("address", "10.0.0.1\n"),
        ("address", "fe80::1%$(reboot) x"),
        ("address", "fe80::1%eth0\nid"),
        ("user", "builder\n"),
        ("buildkit_image", "moby/buildkit\n"),
        ("identity_file", "~nosuchuser-nodefleet/key"),
    ],
)
def test_values_validation_used_to_let_through_are_refused(key: str, value: str) -> None:
    host = {"name": "a", "address": "10.0.0.1", key: value}
    with pytest.raises(InventoryError) as caught:
        parse_inventory({"hosts": [host]}, PATH)
    assert all("\n" not in line for line in caught.value.problems)


@pytest.mark.parametrize(
    "document",
    [
        {"builder": {"name": "fleet\n"}, "hosts": [{"name": "a", "address": "h"}]},
        {"defaults": {"driver_opts": {"env.X\n": "1"}}, "hosts": [{"name": "a", "address": "h"}]},
        {"defaults": {"driver_opts": {"env.X": "1\n"}}, "hosts": [{"name": "a", "address": "h"}]},
        {"registries": {"reg.example\n": {}}, "hosts": [{"name": "a", "address": "h"}]},
        {"registries": {"reg.example": {"mirrors": ["m.example\n"]}}, "hosts": [{"name": "a", "address": "h"}]},
        {"hosts": [{"name": "a", "address": "h", "labels": {"team": "x\n"}}]},
    ],
)
def test_trailing_newlines_are_refused_everywhere(document: dict[str, Any]) -> None:
    with pytest.raises(InventoryError):
        parse_inventory(document, PATH)
