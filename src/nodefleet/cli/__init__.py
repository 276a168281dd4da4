"""The `nodefleet` command: a thin layer that parses options, calls the library and renders its results; one
module per command group. Errors become one line on stderr and an exit code (nodefleet.errors.ExitCode)."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from nodefleet import __version__
from nodefleet.cli.bake import bake_command
from nodefleet.cli.build import build_command
from nodefleet.cli.common import configure_logging, console, fail
from nodefleet.cli.fleet import down, status, up
from nodefleet.cli.inventory import inventory_group
from nodefleet.cli.prune import prune
from nodefleet.errors import ExitCode, NodefleetError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nodefleet")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Native multi-architecture builds: one buildx builder, one node per host, no QEMU."""
    configure_logging(verbose)


for command in (up, status, down, inventory_group, build_command, bake_command, prune):
    cli.add_command(command)


def main() -> NoReturn:
    """Entry point: errors become one line on stderr and an exit code, never a traceback."""
    try:
        _main()
        code: int = ExitCode.OK
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else ExitCode.OK if exc.code is None else ExitCode.FAILED
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    # Every file, lock and subprocess is closed by now: flush the output and skip the interpreter's teardown, which
    # frees each module and object one by one (about 0.1 s here after asyncssh and rich, for nothing).
    logging = sys.modules.get("logging")  # imported by the commands, not by --help
    if logging is not None:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or ExitCode.FAILED
    os._exit(code)


def _main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        fail("aborted", ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        fail(exc.format_message(), ExitCode.USAGE)
    except NodefleetError as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        for line in lines[:-1]:
            console(err=True).print(f"[bold red]nodefleet:[/] {line}", highlight=False)
        fail(lines[-1], exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", ExitCode.INTERRUPTED)
    except OSError as exc:
        fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", ExitCode.FAILED)
