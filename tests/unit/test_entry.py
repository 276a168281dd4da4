"""The console entry point: exit codes and complete output, although it skips the interpreter's teardown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _nodefleet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nodefleet", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def test_help_exits_0_with_all_its_text(tmp_path: Path) -> None:
    completed = _nodefleet("--help", cwd=tmp_path)
    assert completed.returncode == 0
    assert completed.stdout.rstrip().splitlines()[-1].split()[0] == "up"  # the last command listed is there


def test_usage_error_exits_2(tmp_path: Path) -> None:
    completed = _nodefleet("no-such-command", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.strip() == "nodefleet: No such command 'no-such-command'."


def test_bad_inventory_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "inventory.toml").write_text('[builder]\nname = "x"\nbogus = 1\n')
    completed = _nodefleet("status", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "bogus" in completed.stderr and len(completed.stderr.strip().splitlines()) >= 1


def test_help_imports_only_click(tmp_path: Path) -> None:
    """`nodefleet --help` has a time budget (150 ms): the CLI module must not import the library, the SSH stack, rich
    or the inventory parser, which the commands import when they run."""
    code = "import sys, nodefleet.cli; print(' '.join(sorted(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    loaded = set(completed.stdout.split())
    heavy = {"asyncssh", "rich", "tenacity", "json", "logging", "tomllib", "nodefleet.inventory", "nodefleet.fleet"}
    # the library's packages since the restructure (d65ba76): only the CLI's own modules are loaded for --help
    heavy |= {"nodefleet.build", "nodefleet.buildx", "nodefleet.host", "nodefleet.ssh", "nodefleet.state"}
    assert loaded & heavy == set()
