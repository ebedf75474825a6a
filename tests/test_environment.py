"""The environment, the lock and the package layout: what a fresh install gets is exactly what was tested."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from songcorpus.testing.lock_check import LOCK_FILE, REPO_ROOT, drift_message, installed_packages, lock_drift

PYPROJECT = REPO_ROOT / "pyproject.toml"


def test_installed_environment_is_the_lock():
    drift = lock_drift()
    assert not drift, drift_message(drift)


def test_drift_names_each_package():
    """A venv with a newer torchaudio, a missing package and a hand-installed one: each is named."""
    have = installed_packages()
    have["torchaudio"] = "2.11.1"
    have.pop("soxr")
    have["left-pad"] = "1.0"
    drift = lock_drift(installed=have)
    text = drift_message(drift)
    assert ("torchaudio", "2.11.1, uv.lock has 2.11.0") in drift.wrong_version
    assert [n for n, _ in drift.missing] == ["soxr"]
    assert drift.unlocked == [("left-pad", "1.0")]
    assert "torchaudio: installed 2.11.1, uv.lock has 2.11.0" in text and "bash setup.sh" in text


def test_lock_is_current_with_pyproject():
    """uv.lock was refreshed after the last pyproject.toml edit (setup.sh's `uv sync --locked` would refuse)."""
    uv = shutil.which("uv", path=str(Path(REPO_ROOT / ".venv" / "bin"))) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (setup.sh installs it into .venv)")
    done = subprocess.run([uv, "lock", "--check", "--offline"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_lock_pins_hashes_for_every_registry_package():
    lock = tomllib.loads(LOCK_FILE.read_text())
    unhashed = [p["name"] for p in lock["package"] if "registry" in p.get("source", {})
                and not all("hash" in f for f in [*p.get("wheels", []), *([p["sdist"]] if "sdist" in p else [])])]
    assert not unhashed


def test_every_data_folder_is_a_listed_package():
    """setuptools warns once per data folder that is not listed as a package; setup.sh must print nothing of it."""
    cfg = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = {v: k for k, v in cfg["package-dir"].items()}
    expected = set()
    for folder, package in dirs.items():
        for sub in (REPO_ROOT / folder).rglob("*"):
            if sub.is_dir() and sub.name != "__pycache__" and any(f.is_file() for f in sub.iterdir()):
                expected.add(".".join([package, *sub.relative_to(REPO_ROOT / folder).parts]))
    assert expected - listed == set(), "add these to [tool.setuptools] packages and package-data in pyproject.toml"


def test_packages_ray_puts_on_sys_path_are_not_drift():
    """Ray adds its vendored ray/thirdparty_files (psutil, colorama) to sys.path on import; they are not
    installed packages, so the check must not report them (it did, in a full-suite run)."""
    import ray  # noqa: F401

    assert not lock_drift(), drift_message(lock_drift())
