"""Secrets never reach logs, messages or JSON: build arguments whose names look secret, and --secret sources."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nodefleet.errors import CommandError
from nodefleet.redact import redact_argv, secret_name
from nodefleet.runner import run_local


@pytest.mark.parametrize(
    "name", ["API_TOKEN", "token", "GITHUB_TOKEN", "db-password", "AWS_SECRET_ACCESS_KEY", "NPM_AUTH"]
)
def test_secret_names(name: str) -> None:
    assert secret_name(name)


@pytest.mark.parametrize("name", ["VERSION", "MONKEY", "TOKENIZER_MODEL", "BASE_IMAGE", "KEYBOARD"])
def test_plain_names(name: str) -> None:
    assert not secret_name(name)


def test_redact_argv_masks_secret_build_args_and_secret_sources() -> None:
    argv = [
        "docker", "buildx", "build",
        "--build-arg", "API_TOKEN=s3cr3t", "--build-arg=DB_PASSWORD=hunter2", "--build-arg", "VERSION=1.2",
        "--secret", "id=npm,src=/home/me/.npmrc", "--secret=id=gh,env=GH_TOKEN_VALUE",
        "--tag", "reg/app:1", ".",
    ]  # fmt: skip
    shown = redact_argv(argv)
    text = " ".join(shown)
    for secret in ("s3cr3t", "hunter2", "/home/me/.npmrc", "GH_TOKEN_VALUE"):
        assert secret not in text
    assert "API_TOKEN=***" in shown and "--build-arg=DB_PASSWORD=***" in shown and "VERSION=1.2" in shown
    assert "id=npm,src=***" in shown and "--secret=id=gh,src=***" in shown
    assert shown[-3:] == ["--tag", "reg/app:1", "."]


def test_a_failing_command_neither_logs_nor_reports_a_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CommandError) as failure:
        asyncio.run(run_local(["sh", "-c", "exit 3", "--build-arg", "API_TOKEN=s3cr3t"], timeout=10))
    assert "s3cr3t" not in str(failure.value) and "API_TOKEN=***" in str(failure.value)
    assert "s3cr3t" not in caplog.text and "API_TOKEN=***" in caplog.text


def test_secret_values_are_found_for_masking_in_progress_lines() -> None:
    from nodefleet.redact import mask, secret_values

    argv = ["docker", "buildx", "build", "--build-arg", "API_TOKEN=s3cr3t-tok", "--build-arg=DB_PASSWORD=hunter22"]
    argv += ["--build-arg", "VERSION=1.2.3", "--set", "app.args.NPM_TOKEN=npm-abcdef", "--build-arg", "KEY=ab"]
    assert secret_values(argv) == ["npm-abcdef", "s3cr3t-tok", "hunter22"]
    line = '#5 [2/2] RUN test -n "s3cr3t-tok" && echo hunter22 1.2.3'
    assert mask(line, secret_values(argv)) == '#5 [2/2] RUN test -n "***" && echo *** 1.2.3'
