"""The one error tree of nodefleet: every message is one line a user can act on."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What `nodefleet` exits with: the one table of exit codes."""

    OK = 0  # everything asked was done
    FAILED = 1  # some hosts, nodes or platforms failed; the others were done
    USAGE = 2  # bad input (inventory, option, argument), found before any work
    INTERRUPTED = 130  # Ctrl-C


def exit_code(ok: bool) -> ExitCode:
    """OK when everything asked was done, FAILED when some of it failed (USAGE is raised before any work)."""
    return ExitCode.OK if ok else ExitCode.FAILED


class NodefleetError(Exception):
    """Base of every error nodefleet raises on purpose; str() is one line for the user."""

    exit_code = ExitCode.FAILED


class UsageError(NodefleetError):
    """Bad input: an inventory, an option or an argument the user must fix."""

    exit_code = ExitCode.USAGE


class InventoryError(UsageError):
    """One or more problems in the inventory file, each a line naming the file and the key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class SSHError(NodefleetError):
    """A host could not be reached or logged into over SSH."""


class TransientSSHError(SSHError):
    """A fault worth retrying: refused, reset, timed out, connection lost."""


class HostKeyError(SSHError):
    """The host key is unknown or differs from known_hosts; never retried, never bypassed."""


class AuthError(SSHError):
    """The SSH server refused our credentials; never retried."""


class CommandError(NodefleetError):
    """A command exited non-zero; carries the command, exit status and the tail of its output."""

    def __init__(self, command: str, exit_status: int | None, stderr: str, stdout: str = "") -> None:
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
        self.stdout = stdout
        outcome = f"exited {exit_status}" if exit_status is not None else "failed"
        super().__init__(f"`{short_command(command)}` {outcome}: {tail(stderr or stdout)}")


class LockError(NodefleetError):
    """Another nodefleet run holds the builder's lock."""


def short_command(command: str, width: int = 160) -> str:
    """A command as one line for a message: a script shows its first line and an ellipsis."""
    lines = [line.strip() for line in command.strip().splitlines() if line.strip()]
    text = (lines[0] if lines else "") + (" …" if len(lines) > 1 else "")
    return text if len(text) <= width else text[: width - 1] + "…"


def tail(text: str, lines: int = 3, width: int = 400) -> str:
    """Return the last few non-empty lines of `text` joined with ' | ', cut to `width` characters."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    joined = " | ".join(kept)
    return joined if len(joined) <= width else "..." + joined[-width:]
