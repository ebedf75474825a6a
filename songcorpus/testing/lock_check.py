"""Does the running environment hold exactly the locked dependency set (``uv.lock``)?

``setup.sh`` installs ``uv.lock`` with ``uv sync --locked``; anything installed or upgraded by hand after
that (a ``pip install -U``, a stale venv from an older lock) can break an import deep inside torch or
Ray. This check names the drifted packages instead. It reads the lock and the installed distributions
only: no network, no uv needed, about 50 ms.

Reads: ``uv.lock`` at the repository root (an editable install's checkout) and
``importlib.metadata``. Fails: never raises for drift; returns the problems as readable lines.
"""

from __future__ import annotations

import re
import sysconfig
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker, default_environment

REPO_ROOT = Path(__file__).resolve().parents[2]  # songcorpus/testing/ -> the repository
LOCK_FILE = REPO_ROOT / "uv.lock"
PROJECT = "songcorpus"
DEFAULT_EXTRAS = ("dev", "full", "train")  # what setup.sh installs
# venv seed packages uv leaves alone; they never reach the code
SEED_PACKAGES = frozenset({"pip", "setuptools", "wheel"})
FIX = "run `bash setup.sh` to reinstall the locked set (or `bash setup.sh --relock` to move the lock on purpose)"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Drift:
    """What differs between the lock and the environment, each as (package, detail)."""

    wrong_version: list[tuple[str, str]]
    missing: list[tuple[str, str]]
    unlocked: list[tuple[str, str]]

    def lines(self) -> list[str]:
        return ([f"{n}: installed {d}" for n, d in self.wrong_version]
                + [f"{n}: not installed ({d})" for n, d in self.missing]
                + [f"{n}: installed {d}, not in uv.lock" for n, d in self.unlocked])

    def __bool__(self) -> bool:
        return bool(self.wrong_version or self.missing or self.unlocked)


def _applies(entry: dict, env: dict[str, str], extras: Iterable[str] = ()) -> bool:
    marker = entry.get("marker")
    if not marker:
        return True
    m = Marker(marker)
    return any(m.evaluate({**env, "extra": e}) for e in (*extras, "")) if "extra" in marker else m.evaluate(env)


def required_packages(lock: dict, extras: Iterable[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """Every package (name -> locked version) the project with ``extras`` needs on this platform and Python,
    walked through the lock's dependency graph with markers evaluated."""
    env = env or default_environment()
    by_name: dict[str, list[dict]] = {}
    for pkg in lock["package"]:
        by_name.setdefault(pkg["name"], []).append(pkg)

    def pick(dep: dict) -> dict:
        candidates = by_name[dep["name"]]
        if "version" in dep:
            return next(p for p in candidates if p["version"] == dep["version"])
        return candidates[0]

    project = by_name[PROJECT][0]
    todo: list[tuple[dict, tuple[str, ...]]] = []
    for dep in project.get("dependencies", []):
        if _applies(dep, env):
            todo.append((dep, tuple(dep.get("extra", ()))))
    for extra in extras:
        for dep in project.get("optional-dependencies", {}).get(extra, []):
            if _applies(dep, env, (extra,)):
                todo.append((dep, tuple(dep.get("extra", ()))))
    needed: dict[str, str] = {}
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    while todo:
        dep, dep_extras = todo.pop()
        pkg = pick(dep)
        ident = (pkg["name"], pkg["version"], dep_extras)
        if ident in seen:
            continue
        seen.add(ident)
        needed[pkg["name"]] = pkg["version"]
        for sub in pkg.get("dependencies", []):
            if _applies(sub, env):
                todo.append((sub, tuple(sub.get("extra", ()))))
        for extra in dep_extras:
            for sub in pkg.get("optional-dependencies", {}).get(extra, []):
                if _applies(sub, env, (extra,)):
                    todo.append((sub, tuple(sub.get("extra", ()))))
    return needed


def installed_packages() -> dict[str, str]:
    """The distributions of this interpreter's site-packages (not whatever a process later put on sys.path)."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=paths) if d.metadata["Name"]}


def lock_drift(lock_path: Path = LOCK_FILE, extras: Iterable[str] = DEFAULT_EXTRAS,
               installed: dict[str, str] | None = None) -> Drift:
    """Compare the environment with the lock: wrong versions, missing required packages, packages the lock
    does not know at all (installed by hand). Extras beyond ``extras`` that are in the lock are allowed."""
    lock = tomllib.loads(lock_path.read_text())
    locked_versions: dict[str, set[str]] = {}
    for pkg in lock["package"]:
        locked_versions.setdefault(canonical(pkg["name"]), set()).add(pkg["version"])
    needed = {canonical(k): v for k, v in required_packages(lock, extras).items()}
    have = installed_packages() if installed is None else installed
    wrong, missing, unlocked = [], [], []
    for name, version in sorted(have.items()):
        if name == PROJECT or name in SEED_PACKAGES:
            continue
        if name not in locked_versions:
            unlocked.append((name, version))
        elif name in needed and version != needed[name]:
            wrong.append((name, f"{version}, uv.lock has {needed[name]}"))
        elif version not in locked_versions[name]:
            wrong.append((name, f"{version}, uv.lock has {' or '.join(sorted(locked_versions[name]))}"))
    for name, version in sorted(needed.items()):
        if name != PROJECT and name not in have:
            missing.append((name, f"uv.lock has {version}"))
    return Drift(wrong, missing, unlocked)


def drift_message(drift: Drift) -> str:
    lines = drift.lines()
    shown = "\n".join(f"  {line}" for line in lines[:40]) + (f"\n  ... and {len(lines) - 40} more" if len(lines) > 40 else "")
    return f"this environment is not the locked dependency set (uv.lock), {len(lines)} difference(s):\n{shown}\n{FIX}"


def pytest_load_initial_conftests(early_config, parser, args) -> None:  # noqa: ARG001 (pytest's hook signature)
    """As a pytest plugin (``-p songcorpus.testing.lock_check`` in pyproject's addopts) this runs before any
    conftest or test module imports torch or Ray: wrong or missing locked packages stop the suite, named."""
    import pytest

    drift = lock_drift()
    if drift.wrong_version or drift.missing:  # unlocked extras are reported by tests/test_environment.py
        raise pytest.UsageError(drift_message(drift))
