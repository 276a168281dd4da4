"""What every `--json` document starts with, so that machines can tell the version and the outcome first."""

from __future__ import annotations

from typing import Any

JSON_VERSION = 1


def envelope(command: str, builder: str, *, ok: bool, seconds: float) -> dict[str, Any]:
    """The keys every command's document opens with; the command adds its own after them."""
    return {
        "nodefleet_json_version": JSON_VERSION,
        "command": command,
        "builder": builder,
        "ok": ok,
        "seconds": round(seconds, 3),
    }


def exit_code(ok: bool) -> int:
    """0 when everything asked was done, 1 when some of it failed (2, bad input, is raised before any work)."""
    return 0 if ok else 1
