"""`nodefleet inventory check` and `export`."""

from __future__ import annotations

import click

from nodefleet.cli.common import console, inventory_option, load


@click.group("inventory")
def inventory_group() -> None:
    """Check or export the inventory."""


@inventory_group.command("check")
@inventory_option
def inventory_check(inventory_path: str) -> None:
    """Validate the inventory without contacting any host."""
    inventory = load(inventory_path)
    enabled = len(inventory.enabled_hosts)
    console().print(f"{inventory.path}: builder {inventory.builder}, {len(inventory.hosts)} hosts ({enabled} enabled)")


@inventory_group.command("export")
@inventory_option
@click.option("--format", "export_format", type=click.Choice(["ansible"]), default="ansible", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
def inventory_export(inventory_path: str, export_format: str, output: str | None) -> None:
    """Write the inventory in another tool's format (an Ansible YAML inventory)."""
    from pathlib import Path

    from nodefleet.export import render_ansible_inventory

    text = render_ansible_inventory(load(inventory_path))
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text)
