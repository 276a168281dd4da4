"""`up --accept-new-host-keys` judges buildx's OpenSSH path only after nodefleet recorded the host's new key in the
known_hosts file OpenSSH reads: a check started before would find no key and fail the host (fault case
up/host-reinstalled-other-arch)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nodefleet.fleet import up
from nodefleet.fleet.work import FleetOptions, HostWork
from nodefleet.inventory import parse_inventory
from nodefleet.target import HostKeyPolicy


@pytest.mark.parametrize("policy", list(HostKeyPolicy))
def test_the_openssh_check_judged_starts_after_the_key_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: HostKeyPolicy
) -> None:
    inventory = parse_inventory({"hosts": [{"name": "a", "address": "10.0.0.1"}]}, tmp_path / "inventory.toml")
    events: list[str] = []

    def start_openssh(work: HostWork, inventory: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(f"check {len(events)}")
        events.append("openssh started")
        return future

    async def connect(work: HostWork, *args: Any, **kwargs: Any) -> None:
        events.append("connected (key recorded)")
        work.session = object()  # type: ignore[assignment]

    async def take_openssh(work: HostWork, check: asyncio.Future[Any]) -> None:
        events.append(f"judged {check.result()}")

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(up, "start_openssh", start_openssh)
    monkeypatch.setattr(up, "connect", connect)
    monkeypatch.setattr(up, "take_openssh", take_openssh)
    monkeypatch.setattr(up, "probe_host", nothing)
    monkeypatch.setattr(up, "ensure_image", nothing)
    work = HostWork.of(inventory, inventory.hosts[0])

    async def go() -> None:
        early = start_openssh(work, inventory)  # as start_local does for the first hosts
        await up._prepare_host(work, inventory, FleetOptions(host_key_policy=policy), None, early)  # type: ignore[arg-type]

    asyncio.run(go())
    if policy is HostKeyPolicy.ACCEPT_NEW:
        assert events == ["openssh started", "connected (key recorded)", "openssh started", "judged check 2"]
    else:
        assert events == ["openssh started", "connected (key recorded)", "judged check 0"]
