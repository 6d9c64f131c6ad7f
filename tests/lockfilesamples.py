"""Real lockfiles written by the real tools against the fake upstream: the test data of lockfiles.

Why: a parser tested only on hand-written samples tests our reading of the formats, not the
formats. This module locks one small project with uv (``uv lock``, ``uv export --format
pylock.toml``, ``uv pip compile --generate-hashes``) and, when a poetry executable is given, with
``poetry lock``, all against a ``FakeIndex``. Its files are deterministic (see ``fakedists``),
so the hashes are the same on every run; only the index's random port would differ, and it is
rewritten to ``SAMPLE_INDEX_URL`` so that a regeneration shows real changes only.

Regenerate the committed samples (poetry is optional: ``pip install poetry`` into any venv)::

    .venv/bin/python tests/lockfilesamples.py tests/data/lockfiles [--poetry /path/to/poetry]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakeindex import FakeIndex  # noqa: E402
from installers import poetry_env, run_tool, uv_executable, uv_project_env  # noqa: E402

__all__ = ["SAMPLE_INDEX_URL", "SAMPLE_PROJECTS", "add_sample_projects", "generate_samples"]

# What the fake index's address is rewritten to in the committed files.
SAMPLE_INDEX_URL = "http://127.0.0.1:3141"

# (name, versions, dependencies): a small tree with an older version that must not be locked,
# a dependency behind a python_version marker and one behind a platform marker.
SAMPLE_PROJECTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("pkg-a", ("1.0",), ("pkg-b>=1.0", 'pkg-c; python_version < "3.12"')),
    ("pkg-b", ("1.0", "2.0"), ()),
    ("pkg-c", ("1.5",), ()),
    ("pkg-d", ("0.3",), ('pkg-e; sys_platform == "win32"',)),
    ("pkg-e", ("4.1",), ()),
)

_PYPROJECT = """\
[project]
name = "sample-app"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["pkg-a", "pkg-d==0.3"]
"""

_POETRY_SOURCE = """
[[tool.poetry.source]]
name = "fake"
url = "{simple_url}"
priority = "primary"

[tool.poetry]
package-mode = false
"""


def add_sample_projects(fake: FakeIndex) -> None:
    for name, versions, dependencies in SAMPLE_PROJECTS:
        fake.add_project(name, versions, dependencies=dependencies)


def _write_sample(dest: Path, name: str, text: str, fake: FakeIndex) -> None:
    (dest / name).write_text(text.replace(fake.url, SAMPLE_INDEX_URL), encoding="utf-8")


def generate_samples(dest: Path, *, poetry: str | None = None) -> list[str]:
    """Write ``uv.lock``, ``pylock.toml``, ``requirements.txt`` (and ``poetry.lock``) into ``dest``.

    Returns the names written. Each tool runs in a fresh project directory with its own caches,
    isolated from this machine's pip/uv/poetry settings.
    """
    uv = uv_executable()
    assert uv is not None, "uv is part of the test extra"
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with FakeIndex() as fake, tempfile.TemporaryDirectory(prefix="lockfile-samples-") as tmp:
        add_sample_projects(fake)
        work = Path(tmp)
        env = uv_project_env(fake.simple_url, work / "uv-cache")
        project = work / "uv-project"
        project.mkdir()
        (project / "pyproject.toml").write_text(_PYPROJECT, encoding="utf-8")
        run_tool([uv, "lock"], project, env)
        _write_sample(dest, "uv.lock", (project / "uv.lock").read_text(encoding="utf-8"), fake)
        written.append("uv.lock")
        pylock = run_tool([uv, "export", "--frozen", "--format", "pylock.toml", "--no-header"], project, env)
        _write_sample(dest, "pylock.toml", pylock, fake)
        written.append("pylock.toml")
        (project / "requirements.in").write_text("pkg-a\npkg-d==0.3\n", encoding="utf-8")
        requirements = run_tool([uv, "pip", "compile", "--universal", "--generate-hashes", "--no-header",
                                 "--python-version", "3.11", "requirements.in"], project, env)
        _write_sample(dest, "requirements.txt", requirements, fake)
        written.append("requirements.txt")
        if poetry is not None:
            poetry_project = work / "poetry-project"
            poetry_project.mkdir()
            (poetry_project / "pyproject.toml").write_text(
                _PYPROJECT + _POETRY_SOURCE.format(simple_url=fake.simple_url), encoding="utf-8")
            run_tool([poetry, "lock"], poetry_project, poetry_env(work))
            _write_sample(dest, "poetry.lock", (poetry_project / "poetry.lock").read_text(encoding="utf-8"), fake)
            written.append("poetry.lock")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--poetry", help="a poetry executable; without it poetry.lock is left as it is")
    args = parser.parse_args()
    names = generate_samples(args.dest, poetry=args.poetry)
    print("wrote", ", ".join(names), "to", os.fspath(args.dest))


if __name__ == "__main__":
    main()
