"""What every command shares: output consoles (rich, imported on first use), logging, loading the inventory,
running the library's coroutine, the progress spinner, one red line for a failure, and the common options."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from nodefleet.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from nodefleet.inventory import Inventory

# `nodefleet --help` must stay fast (150 ms), so the cli modules import little more than click: json, logging,
# pathlib, the inventory parser and the library are imported by the commands that use them.

T = TypeVar("T")


@functools.cache
def console(err: bool = False) -> Console:
    # rich is imported on first output only, so `nodefleet --help` stays fast.
    from rich.console import Console

    stream = sys.stderr if err else sys.stdout
    # Piped or captured output keeps whole columns instead of folding them to 80 characters.
    return Console(stderr=err, soft_wrap=True, width=None if stream.isatty() else 200)


def configure_logging(verbose: int) -> None:
    import logging

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="nodefleet: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # asyncssh logs every packet at debug; its auth messages are not for the default output.
    logging.getLogger("asyncssh").setLevel(logging.WARNING if verbose < 3 else logging.DEBUG)


def load(path: str) -> Inventory:
    from pathlib import Path

    from nodefleet.inventory import load_inventory

    return load_inventory(Path(path))


def run(coroutine: Coroutine[Any, Any, T], *, tables: bool = False) -> T:
    """Run the library's coroutine. With `tables`, rich (for the tables at the end) is imported in a thread while
    the hosts answer, so that its import is off the critical path. The thread waits for the SSH stack's import
    first: both hold the interpreter, and the command needs the SSH stack before anything else."""
    import asyncio

    async def main() -> T:
        loader = asyncio.get_running_loop().run_in_executor(None, import_rich) if tables else None
        try:
            return await coroutine
        finally:
            if loader is not None:
                await loader

    return asyncio.run(main())


def import_rich() -> None:
    import importlib

    importlib.import_module("nodefleet.ssh")  # waits while the command's own import of it runs
    import rich.console
    import rich.markup
    import rich.table  # noqa: F401


@contextlib.contextmanager
def spinner(enabled: bool) -> Iterator[Callable[[str, str], None]]:
    """A one-line spinner on stderr showing the latest step per host, only on a terminal."""
    if not enabled or not sys.stderr.isatty():  # before rich's import: `up` has no time for it up front
        yield lambda _host, _message: None
        return
    stderr = console(err=True)
    if not stderr.is_terminal:
        yield lambda _host, _message: None
        return
    latest: dict[str, str] = {}
    with stderr.status("starting") as spinner:

        def update(host: str, message: str) -> None:
            latest[host] = message
            spinner.update("  ".join(f"{name}: {step}" for name, step in list(latest.items())[-4:]))

        yield update


def fail(message: str, code: int = ExitCode.FAILED) -> NoReturn:
    """Print one red line to stderr and exit."""
    console(err=True).print(f"[bold red]nodefleet:[/] {message}", highlight=False, markup=True)
    raise SystemExit(code)


inventory_option = click.option(
    "-i",
    "--inventory",
    "inventory_path",
    default=lambda: os.environ.get("NODEFLEET_INVENTORY", "inventory.toml"),
    show_default="inventory.toml or $NODEFLEET_INVENTORY",
    help="The inventory file.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print versioned JSON on stdout.")
parallel_option = click.option(
    "--parallel",
    type=click.IntRange(1, 256),
    default=None,
    help="Hosts worked on at once (default: inventory).",
)


allow_emulation_option = click.option(
    "--allow-emulation",
    is_flag=True,
    help="Build a platform with no healthy native node under QEMU on another node (reported as emulated).",
)


def platform_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--platform, repeatable, comma-separated."""
    return click.option("--platform", "platforms", multiple=True, metavar="PLATFORM[,PLATFORM]", help=help_text)


def cache_ref_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--cache-ref REPO."""
    return click.option("--cache-ref", metavar="REPO", default=None, help=help_text)


def write_err(text: str) -> None:
    """One line on stderr, at once."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
