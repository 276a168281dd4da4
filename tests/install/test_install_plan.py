"""The lab's Debian install plan, checked where the machine is clean: nothing it does not name comes from trixie.

A minimal Debian 12 root is made once with debootstrap (from Debian's archive, cached under
$NODEFLEET_LAB_CACHE/install-plan, default /var/cache/nodefleet-lab) and given a stock Debian 12's apt sources.
Inside it (chroot), lab/install-packages.sh --simulate adds the lab's sources and pins with lab/apt-setup.sh and
prints `apt-get -s install` of the whole plan (lab/install-plan.txt). Every package that simulation would install
or upgrade must come from bookworm, unless the plan names it `trixie`; the packages named `trixie` must come from
there. Installs nothing, in the root or on the machine.

Needs root, debootstrap (lab/install-deps.sh installs it) and Debian's archive; skipped without root except in CI.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "lab"
PLAN = LAB / "install-plan.txt"
SCRIPTS = ("apt-setup.sh", "install-packages.sh", "install-plan.txt")
MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("NODEFLEET_LAB_CACHE", "/var/cache/nodefleet-lab")) / "install-plan"
ROOT = CACHE / "bookworm-minbase"
STAMP = ROOT / ".nflab-debootstrap-ok"
MAX_AGE = 30 * 86400  # a root older than this is made again, so it stays near the current point release
# A stock Debian 12's sources (deb822, as the installer writes them).
STOCK_SOURCES = f"""Types: deb
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# `Inst NAME[:ARCH] [OLD] (VERSION ORIGIN, ORIGIN... [ARCH])`, ORIGIN being Label:Version/Archive; apt may add
# ` [PKG:ARCH ]` after it (packages it breaks and reconfigures together, e.g. libc-bin for libc6).
INST = re.compile(
    r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[(?P<old>[^\]]+)\] )?"
    r"\((?P<version>\S+) (?P<origins>.*?) \[[^\]]+\]\)(?: \[[^\]]*\])*$"
)
BOOKWORM = re.compile(r"^Debian(?:-Security)?:12(?:[.\-/]|$)")


@dataclass(frozen=True)
class Inst:
    name: str
    old: str | None
    version: str
    origins: tuple[str, ...]
    line: str

    @property
    def from_bookworm(self) -> bool:
        return any(BOOKWORM.match(o) for o in self.origins)

    @property
    def from_debian(self) -> bool:
        return any(o.startswith("Debian") for o in self.origins)


def read_plan() -> dict[str, set[str]]:
    plan: dict[str, set[str]] = {"trixie": set(), "bookworm": set()}
    for raw in PLAN.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        assert len(words) == 2, f"{PLAN}: not `RELEASE PACKAGE`: {raw!r}"
        release, package = words
        assert release in plan, f"{PLAN}: unknown release {release!r}"
        plan[release].add(package)
    return plan


def parse_inst(output: str) -> list[Inst]:
    found = []
    for line in output.splitlines():
        if not line.startswith("Inst "):
            continue
        m = INST.match(line)
        assert m, f"unexpected apt-get -s line: {line!r}"
        found.append(Inst(m["name"], m["old"], m["version"], tuple(m["origins"].split(", ")), line))
    return found


def unnamed_from_trixie(insts: list[Inst], trixie: set[str]) -> list[str]:
    """Lines of packages from Debian but not bookworm (so trixie or unstable) that the plan does not name `trixie`."""
    return [i.line for i in insts if i.from_debian and not i.from_bookworm and i.name not in trixie]


def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def clean_root() -> Iterator[Path]:
    """A debootstrapped Debian 12 (minbase) with a stock Debian 12's apt sources; nothing installed in it, ever."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the install-plan test needs root (debootstrap, chroot); CI runs as root")
        pytest.skip("needs root (debootstrap, chroot)")
    debootstrap = shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if debootstrap is None:
        pytest.fail("debootstrap is missing: run ./lab/install-deps.sh (it installs it from bookworm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one test session at a time works in the cached root
        fresh = STAMP.exists() and time.time() - STAMP.stat().st_mtime < MAX_AGE
        if not fresh:
            shutil.rmtree(ROOT, ignore_errors=True)
            made = run([debootstrap, "--variant=minbase", "bookworm", str(ROOT), MIRROR], timeout=1800)
            assert made.returncode == 0, f"debootstrap failed:\n{made.stdout[-3000:]}\n{made.stderr[-3000:]}"
            STAMP.write_text(f"debootstrap --variant=minbase bookworm {MIRROR}\n")
        apt = ROOT / "etc/apt"
        (apt / "sources.list").unlink(missing_ok=True)
        sources = apt / "sources.list.d/debian.sources"
        if not sources.exists() or sources.read_text() != STOCK_SOURCES:
            sources.write_text(STOCK_SOURCES)
            (ROOT / "var/lib/apt/nodefleet-lab.updated").unlink(missing_ok=True)  # apt-setup.sh then updates
        shutil.copyfile("/etc/resolv.conf", ROOT / "etc/resolv.conf")
        opt = ROOT / "opt/nodefleet-lab"
        shutil.rmtree(opt, ignore_errors=True)
        opt.mkdir(parents=True)
        for name in SCRIPTS:
            shutil.copy2(LAB / name, opt / name)
        yield ROOT


def test_install_plan_takes_nothing_unnamed_from_trixie(clean_root: Path) -> None:
    plan = read_plan()
    assert {"docker.io", "docker-buildx"} <= plan["trixie"], "the lab needs docker.io 26 and docker-buildx from trixie"
    assert not plan["trixie"] & plan["bookworm"], "a package is named with two releases"

    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"]
    sim = run(["chroot", str(clean_root), *env, "bash", "/opt/nodefleet-lab/install-packages.sh", "--simulate"], 900)
    output = sim.stdout + sim.stderr
    insts = parse_inst(sim.stdout)
    assert insts, f"the simulation installs nothing (exit {sim.returncode}):\n{output[-5000:]}"

    unnamed = unnamed_from_trixie(insts, plan["trixie"])
    assert not unnamed, (
        "packages the plan does not name `trixie` would come from trixie/unstable:\n  "
        + "\n  ".join(unnamed)
        + "\nname each in lab/install-plan.txt (as `trixie` only when bookworm cannot serve it)"
    )
    not_debian = [i.line for i in insts if not i.from_debian]
    assert not not_debian, "packages from outside Debian's archive:\n  " + "\n  ".join(not_debian)

    by_name = {i.name: i for i in insts}
    for package in sorted(plan["trixie"]):
        assert package in by_name, f"{package} (plan: trixie) is not installed by the simulation"
        assert not by_name[package].from_bookworm, f"{package} should come from trixie: {by_name[package].line}"
    not_installed = sorted(plan["bookworm"] - by_name.keys() - installed_in(clean_root))
    assert not not_installed, f"plan packages the simulation leaves out: {not_installed}"
    assert sim.returncode == 0, f"install-packages.sh --simulate exited {sim.returncode}:\n{output[-5000:]}"


def installed_in(root: Path) -> set[str]:
    listed = run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n"], 120)
    assert listed.returncode == 0, listed.stderr
    return {line.split()[0] for line in listed.stdout.splitlines() if line.endswith(" installed")}


def test_inst_line_parsing() -> None:
    out = "\n".join(
        [
            "Inst docker.io (26.1.5+dfsg1-9+deb13u1+b1 Debian:13.8/stable [amd64])",
            "Inst openssh-client [1:9.2p1-2+deb12u6] (1:9.2p1-2+deb12u10 Debian:12.15/oldstable [amd64])",
            "Inst runc (1.1.5+ds1-1+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])",
            "Inst libsort-naturally-perl (1.03-4 Debian:12.15/oldstable, Debian:13.8/stable, Debian:unstable [all])",
            "Inst containerd (2.1.9+ds1-5 Debian:unstable [amd64])",
            "Inst libc6:arm64 (2.36-9+deb12u13 Debian:12-updates/oldstable-updates [arm64])",
            "Inst libc6 [2.36-9+deb12u14] (2.41-12+deb13u5 Debian:13.8/stable [amd64]) [libc-bin:amd64 ]",
            "Conf docker.io (26.1.5+dfsg1-9+deb13u1+b1 Debian:13.8/stable [amd64])",
        ]
    )
    got = {i.name: (i.old, i.from_bookworm, i.from_debian) for i in parse_inst(out)}
    assert got == {
        "docker.io": (None, False, True),
        "openssh-client": ("1:9.2p1-2+deb12u6", True, True),
        "runc": (None, True, True),
        "libsort-naturally-perl": (None, True, True),
        "containerd": (None, False, True),
        "libc6": ("2.36-9+deb12u14", False, True),
    }
    flagged = unnamed_from_trixie(parse_inst(out), {"docker.io"})
    assert [line.split()[1] for line in flagged] == ["containerd", "libc6"]
