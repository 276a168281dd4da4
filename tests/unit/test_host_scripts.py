"""The remote scripts as files (src/nodefleet/host/scripts/*.sh): shellcheck-clean POSIX sh, parsed by every shell
they run under, and `script(name, *args)` is exactly `sh NAME.sh ARGS...`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nodefleet.host import scripts
from nodefleet.host.scripts import script, script_text
from tests.unit.shells import SHELL_NAMES, SHELLS, run_script, shell_argv, stub_docker

FOLDER = Path(scripts.__file__).with_suffix("")  # host/scripts/, beside host/scripts.py
NAMES = sorted(path.stem for path in FOLDER.glob("*.sh"))


def test_every_script_is_shipped() -> None:
    assert NAMES == ["probe", "remove_node"]
    for name in NAMES:
        assert script_text(name) == (FOLDER / f"{name}.sh").read_text()
        assert script_text(name).startswith("#!/bin/sh\n")


@pytest.mark.parametrize("name", NAMES)
def test_shellcheck_finds_nothing(name: str) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is not installed: apt-get install shellcheck (lab/install-deps.sh does)"
    completed = subprocess.run(
        [shellcheck, "--shell=sh", "--format=gcc", str(FOLDER / f"{name}.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("shell", SHELL_NAMES)
@pytest.mark.parametrize("name", NAMES)
def test_every_shell_parses_the_script(shell: str, name: str) -> None:
    program, *_ = SHELLS[shell]
    argv = shell_argv(shell, script_text(name))
    noexec = [argv[0], *(["sh"] if program == "busybox" else []), "-n", "-c", argv[-1]]
    completed = subprocess.run(noexec, capture_output=True, text=True, timeout=30, check=False)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("shell", SHELL_NAMES)
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("probe", ("buildx_buildkit_a b", "", "", "img 'x'", "none")),
        ("probe", ("buildx_buildkit_$(id)", "c0ffee 2026-01-01T00:00:00Z", "", "", "none")),
        ("remove_node", ("buildx_buildkit_a;b", "buildx_buildkit_a;b_state")),
        ("remove_node", ("buildx_buildkit_x", "")),
    ],
)
def test_script_is_the_file_run_with_its_arguments(
    tmp_path: Path, shell: str, name: str, args: tuple[str, ...]
) -> None:
    log = tmp_path / "argv.log"
    stub = stub_docker(
        tmp_path / "bin",
        f'printf \'%s\\0\' "$#" "$@" >> {log}\n'
        '[ "$1 $2 $3 $4" = "inspect --type container -f" ] && echo "running c0ffee 2026-01-01T00:00:00Z img"\n'
        '[ "$1 $2" = "container inspect" ] && exit 1\nexit 0',
    )
    env = {"PATH": f"{stub}:/usr/bin:/bin"}
    answers = []
    for argv in (
        shell_argv(shell, script(name, *args)),
        [*shell_argv(shell, "")[:-2], str(FOLDER / f"{name}.sh"), *args],  # SHELL NAME.sh ARGS... (no -c)
    ):
        log.write_bytes(b"")
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, env=env)
        answers.append((completed.returncode, completed.stdout, log.read_bytes()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 0 and args[0].encode() in answers[0][2]


@pytest.mark.parametrize("shell", SHELL_NAMES)
def test_remove_node_keeps_the_volume_when_none_is_named(tmp_path: Path, shell: str) -> None:
    log = tmp_path / "calls"
    stub = stub_docker(tmp_path / "bin", f'echo "$*" >> {log}\n[ "$1 $2" = "container inspect" ] && exit 1\nexit 0')
    run_script(shell, script("remove_node", "buildx_buildkit_x", ""), {"PATH": f"{stub}:/usr/bin:/bin"})
    assert log.read_text().splitlines() == [
        "version --format {{.Server.Version}}",
        "rm -f buildx_buildkit_x",
        "container inspect buildx_buildkit_x",
    ]
