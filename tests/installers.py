"""Run real pip and uv against an index, isolated from this machine's own pip and uv settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["installer_env", "pip_install", "poetry_env", "run_tool", "uv_executable", "uv_pip_install", "uv_project_env"]


def installer_env() -> dict[str, str]:
    """The environment minus every pip/uv setting of this machine, so only the given index is used."""
    # REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE would silently override pip's --cert.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_")) and k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", UV_NO_CONFIG="1")
    return env


def uv_project_env(index_url: str, cache_dir: Path) -> dict[str, str]:
    """``installer_env`` for uv's project commands (lock, export, sync, pip compile): ``index_url``
    as the only index, its own cache, and this interpreter (never one uv would download)."""
    return dict(installer_env(), UV_CACHE_DIR=str(cache_dir), UV_PYTHON=sys.executable,
                UV_PYTHON_DOWNLOADS="never", UV_DEFAULT_INDEX=index_url)


def poetry_env(work: Path) -> dict[str, str]:
    """``installer_env`` for poetry: its cache and configuration under ``work``, no prompts, no venv."""
    return dict(installer_env(), POETRY_CACHE_DIR=str(work / "poetry-cache"), POETRY_CONFIG_DIR=str(work / "poetry-config"),
                POETRY_VIRTUALENVS_CREATE="false", POETRY_NO_INTERACTION="1")


def run_tool(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a locking or installing tool in ``cwd``; its stdout, or an error carrying all it printed."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result.stdout


def uv_executable() -> str | None:
    """The uv installed beside this interpreter (the test extra), if any."""
    return shutil.which("uv", path=os.path.dirname(sys.executable))


def pip_install(index_url: str, target: Path, *requirements: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index_url,
               "--target", str(target), *extra, *requirements]
    return subprocess.run(command, env=installer_env(), capture_output=True, text=True, timeout=180)


def uv_pip_install(index_url: str, target: Path, *requirements: str) -> subprocess.CompletedProcess[str]:
    uv = uv_executable()
    assert uv is not None, "uv is part of the test extra"
    command = [uv, "pip", "install", "--no-cache", "--index-url", index_url, "--target", str(target),
               "--python", sys.executable, *requirements]
    return subprocess.run(command, env=installer_env(), capture_output=True, text=True, timeout=180)
