"""The Makefile says which Python it found and which it needs before making a venv from one too old."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make on PATH")


def _fake_python(tmp_path, version: str):
    """A `python` that reports `version` and logs how it was called (a venv made from it would show there)."""
    calls = tmp_path / "calls.log"
    fake = tmp_path / "bin" / "python-old"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho {version}\n')
    fake.chmod(0o755)
    return fake, calls


def _make(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_python_too_old_is_named_with_the_fix_and_no_venv_is_made(tmp_path):
    fake, calls = _fake_python(tmp_path, "3.10.14")
    venv = tmp_path / "venv"
    done = _make(tmp_path, "install", f"PYTHON={fake}", f"VENV={venv}")
    assert done.returncode != 0
    assert f"PYTHON={fake} ({fake}) is Python 3.10.14; embedpipe needs Python 3.11 or newer" in done.stderr
    assert "make PYTHON=python3.11 install" in done.stderr
    assert not venv.exists()
    assert "-m venv" not in calls.read_text()  # asked for its version only


def test_a_python_that_does_not_run_is_named(tmp_path):
    done = _make(tmp_path, "check-python", "PYTHON=no-such-python-embedpipe")
    assert done.returncode != 0
    assert "cannot run PYTHON=no-such-python-embedpipe" in done.stderr
    assert "make PYTHON=python3.11 check-python" in done.stderr


@pytest.mark.parametrize("version", ["3.11.0", "3.12.4", "3.13.1"])
def test_a_new_enough_python_passes(tmp_path, version):
    fake, _ = _fake_python(tmp_path, version)
    done = _make(tmp_path, "check-python", f"PYTHON={fake}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Python {version} ({fake})"
