"""Run real pip and uv against an index, isolated from this machine's own pip and uv settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["installer_env", "pip_install", "uv_executable", "uv_pip_install"]


def installer_env() -> dict[str, str]:
    """The environment minus every pip/uv setting of this machine, so only the given index is used."""
    # REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE would silently override pip's --cert.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_")) and k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", UV_NO_CONFIG="1")
    return env


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
