"""Build routing and retry decisions the fault matrix (tests/e2e/test_faults.py) found wrong; pure functions."""

from __future__ import annotations

import pytest

from nodefleet.build.output import FailureKind, classify_failure
from nodefleet.build.routing import Health, NodeView, select_nodes


def test_a_fast_failing_primary_waits_for_a_host_whose_platform_is_not_known_yet() -> None:
    """arm64-1 (known arm64) fails at once; arm64-2 (a standby never built on: platform unknown) still answering.
    Refusing linux/arm64 now would fail closed although arm64-2 is about to say it builds it."""
    failed = NodeView("arm64-1", 1, ("linux/arm64",), health=Health.FAILED, error="engine not running")
    pending = NodeView("arm64-2", 2, (), health=Health.PENDING)
    amd = NodeView("amd64-1", 0, ("linux/amd64",), health=Health.HEALTHY)
    for grace_over in (False, True):
        selection = select_nodes(
            [amd, failed, pending], ["linux/amd64", "linux/arm64"], allow_emulation=False, grace_over=grace_over
        )
        assert selection.pending and not selection.refused
    answered = NodeView("arm64-2", 2, ("linux/arm64",), health=Health.HEALTHY)
    selection = select_nodes(
        [amd, failed, answered], ["linux/amd64", "linux/arm64"], allow_emulation=False, grace_over=True
    )
    assert [(choice.platform, choice.node) for choice in selection.choices] == [
        ("linux/amd64", "amd64-1"),
        ("linux/arm64", "arm64-2"),
    ]


def test_refused_once_every_host_has_answered() -> None:
    failed = NodeView("arm64-1", 1, ("linux/arm64",), health=Health.FAILED, error="down")
    other = NodeView("amd64-1", 0, ("linux/amd64",), health=Health.HEALTHY)
    selection = select_nodes([other, failed], ["linux/arm64"], allow_emulation=False, grace_over=True)
    assert [platform for platform, _ in selection.refused] == ["linux/arm64"]


@pytest.mark.parametrize(
    "error",
    [
        "ERROR: failed to solve: failed to push 10.231.0.1:5999/app: failed to do request: Head "
        '"https://10.231.0.1:5999/v2/app/blobs/sha256:ab": dial tcp 10.231.0.1:5999: connect: connection refused',
        "ERROR: failed to solve: 10.231.0.1:5999/lab/busybox:stable: failed to resolve source metadata for "
        "10.231.0.1:5999/lab/busybox:stable: failed to do request: Head ...: connect: connection refused",
        "ERROR: failed to solve: failed to authorize: failed to fetch oauth token: unexpected EOF",
    ],
)
def test_a_registry_that_fails_is_not_retried_on_another_node(error: str) -> None:
    assert classify_failure(error) is FailureKind.OTHER


def test_a_node_connection_fault_is_still_retried() -> None:
    assert classify_failure("ERROR: failed to dial gRPC: connection refused") is FailureKind.INFRASTRUCTURE
