"""The shell scripts nodefleet runs on hosts: real `.sh` files shipped beside this module (so they can be
shellchecked and run by hand), sent with their arguments quoted in front of them."""

from __future__ import annotations

import functools
import shlex
from importlib import resources


@functools.cache
def script_text(name: str) -> str:
    """The text of `scripts/<name>.sh`."""
    return resources.files(__package__).joinpath("scripts", f"{name}.sh").read_text(encoding="utf-8")


def script(name: str, *args: str) -> str:
    """A remote command running `scripts/<name>.sh` with `args` as its positional parameters, each quoted: the
    script reads them as $1, $2, ... exactly as `sh NAME.sh ARGS...` would."""
    return f"set -- {shlex.join(args)}\n{script_text(name)}"
