"""Secrets kept out of logs, messages and JSON: the values of build arguments whose names look secret (the names
docker's own SecretsUsedInArgOrEnv check flags) and the sources of `--secret`, shown as `***`."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

MASK = "***"
# docker's SecretsUsedInArgOrEnv: a name part (split on _ - .) that is one of these words, case-insensitive.
_SECRET_NAME = re.compile(
    r"(?i)(?:^|[_.-])(?:apikey|auth|credentials?|key|password|pword|passwd|secret|token)(?:[_.-]|$)"
)
_VALUE_OPTIONS = {"--build-arg": "arg", "--secret": "secret"}


def secret_name(name: str) -> bool:
    """True when a build argument's name looks like it holds a secret (API_TOKEN, db-password, KEY)."""
    return bool(_SECRET_NAME.search(name))


def _masked(kind: str, value: str) -> str:
    if kind == "secret":
        # id=NAME,src=PATH / env=VAR: the id stays (it names the secret), where it comes from does not.
        fields = [field for field in value.split(",") if field.split("=", 1)[0] in {"id", "type"}]
        return ",".join([*fields, f"src={MASK}"]) if fields else MASK
    name, sep, _value = value.partition("=")
    return f"{name}={MASK}" if sep and secret_name(name) else value


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The argv with secret build-arg values and secret sources replaced by `***` (`--opt value` and `--opt=value`)."""
    shown: list[str] = []
    pending: str | None = None
    for word in argv:
        if pending is not None:
            shown.append(_masked(pending, word))
            pending = None
            continue
        option, sep, value = word.partition("=")
        if option in _VALUE_OPTIONS and sep:
            shown.append(f"{option}={_masked(_VALUE_OPTIONS[option], value)}")
        else:
            shown.append(word)
            pending = _VALUE_OPTIONS.get(word)
    return shown


def shown_command(argv: Sequence[str]) -> str:
    """An argv as one shell line for logs and messages, secrets masked."""
    return shlex.join(redact_argv(argv))


def secret_values(argv: Sequence[str]) -> list[str]:
    """The values of secret build arguments in an argv (`--build-arg NAME=VALUE`, bake's `--set T.args.NAME=VALUE`),
    longest first: BuildKit names a RUN step with its arguments expanded, so they must be masked in its progress
    too. Values shorter than 4 characters are left alone (masking `1` everywhere would hide nothing and mangle
    everything)."""
    found: list[str] = []
    for option, value in zip(argv, [*argv[1:], ""], strict=True):
        text = value if option in {"--build-arg", "--set"} else None
        if text is None and option.startswith(("--build-arg=", "--set=")):
            text = option.split("=", 1)[1]
        if text is None:
            continue
        name, sep, secret = text.partition("=")
        name = name.rsplit(".args.", 1)[-1] if option.startswith("--set") else name
        if sep and len(secret) >= 4 and secret_name(name) and (option.startswith("--build-arg") or ".args." in text):
            found.append(secret)
    return sorted(set(found), key=lambda value: (-len(value), value))


def mask(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret value replaced by `***`."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
