"""Real, deterministic distributions (wheel, sdist, core metadata) for the fake upstream index.

Why real archives: pip and uv open what they download, and the mirror checks sizes and sha256,
so zero-byte stand-ins would let bugs through. What this module promises: the same
``DistSpec`` always gives the same bytes (fixed zip timestamps, sorted entries, tar and gzip
mtime 0), so two fake indexes, or two test runs, serve identical files and hashes.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import logging
import random
import re
import tarfile
import zipfile
from dataclasses import dataclass, field

__all__ = [
    "BuiltDist",
    "DistSpec",
    "build_release",
    "build_sdist",
    "build_wheel",
    "dist_name",
    "render_core_metadata",
    "sdist_filename",
    "wheel_filename",
]

logger = logging.getLogger(__name__)

# The earliest timestamp a zip entry can hold; every wheel entry carries it.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# Builds whose padding is at most this big are cached process-wide: add_many() of 2,000 projects
# in several tests then costs one build each. Big padded files are rebuilt rather than pinned.
_CACHEABLE_PAYLOAD = 64 * 1024
_WHEEL_FILE = b"Wheel-Version: 1.0\nGenerator: fakeindex\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n"


@dataclass(frozen=True, slots=True)
class DistSpec:
    """Everything that decides the bytes of a release's files (and nothing that does not)."""

    name: str
    version: str
    requires_python: str | None = None
    dependencies: tuple[str, ...] = ()
    payload_size: int = 0


@dataclass(frozen=True)  # no slots: the cached digests live in the instance __dict__
class BuiltDist:
    """One distribution file with its digests and its path on the files host (``ab/cd/<hash>/<file>``)."""

    filename: str
    content: bytes = field(repr=False)
    packagetype: str
    python_version: str
    metadata: bytes | None = field(default=None, repr=False)

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @functools.cached_property
    def md5(self) -> str:
        return hashlib.md5(self.content).hexdigest()

    @functools.cached_property
    def blake2b_256(self) -> str:
        return hashlib.blake2b(self.content, digest_size=32).hexdigest()

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def metadata_sha256(self) -> str | None:
        """sha256 of the ``.metadata`` file, or None when there is none (sdists)."""
        return None if self.metadata is None else hashlib.sha256(self.metadata).hexdigest()

    @property
    def path(self) -> str:
        """``/packages/ab/cd/<60 hex>/<filename>``, derived from the content like PyPI's."""
        b2 = self.blake2b_256
        return f"/packages/{b2[:2]}/{b2[2:4]}/{b2[4:]}/{self.filename}"


def dist_name(name: str) -> str:
    """The name as it appears in file names: normalized, with ``_`` for separators.

    >>> dist_name("Foo.Bar-baz")
    'foo_bar_baz'
    """
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_filename(spec: DistSpec) -> str:
    return f"{dist_name(spec.name)}-{spec.version}-py3-none-any.whl"


def sdist_filename(spec: DistSpec) -> str:
    return f"{dist_name(spec.name)}-{spec.version}.tar.gz"


def render_core_metadata(spec: DistSpec) -> bytes:
    """The METADATA / PKG-INFO text, Metadata-Version 2.1, with the fields installers read."""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {spec.name}",
        f"Version: {spec.version}",
        f"Summary: Fake project {spec.name} served by the test index",
    ]
    if spec.requires_python is not None:
        lines.append(f"Requires-Python: {spec.requires_python}")
    lines.extend(f"Requires-Dist: {dependency}" for dependency in spec.dependencies)
    return ("\n".join(lines) + "\n\n").encode()


def _module_files(spec: DistSpec) -> dict[str, bytes]:
    """The importable package, plus the seeded padding file when a size is asked for."""
    package = dist_name(spec.name)
    files = {f"{package}/__init__.py": f'"""{spec.name} {spec.version}."""\n\nVERSION = "{spec.version}"\n'.encode()}
    if spec.payload_size > 0:
        files[f"{package}/payload.bin"] = _payload(spec)
    return files


def _payload(spec: DistSpec) -> bytes:
    # Random bytes do not compress, so the archive grows by about payload_size; seeded, so stable.
    return random.Random(f"{spec.name}=={spec.version}").randbytes(spec.payload_size)


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _render_record(files: dict[str, bytes], record_path: str) -> bytes:
    rows = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    rows.append(f"{record_path},,")
    return ("\n".join(rows) + "\n").encode()


def build_wheel(spec: DistSpec) -> BuiltDist:
    """A pure-Python ``py3-none-any`` wheel whose RECORD lists the true hash of every entry."""
    if spec.payload_size <= _CACHEABLE_PAYLOAD:
        return _build_wheel_cached(spec)
    return _build_wheel(spec)


@functools.lru_cache(maxsize=8192)
def _build_wheel_cached(spec: DistSpec) -> BuiltDist:
    return _build_wheel(spec)


def _build_wheel(spec: DistSpec) -> BuiltDist:
    info_dir = f"{dist_name(spec.name)}-{spec.version}.dist-info"
    metadata = render_core_metadata(spec)
    files = dict(sorted(_module_files(spec).items()))
    files[f"{info_dir}/METADATA"] = metadata
    files[f"{info_dir}/WHEEL"] = _WHEEL_FILE
    record_path = f"{info_dir}/RECORD"
    files[record_path] = _render_record(files, record_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            _write_zip_entry(archive, path, data)
    return BuiltDist(wheel_filename(spec), buffer.getvalue(), "bdist_wheel", "py3", metadata)


def _write_zip_entry(archive: zipfile.ZipFile, path: str, data: bytes) -> None:
    info = zipfile.ZipInfo(path, date_time=_ZIP_EPOCH)
    info.external_attr = 0o644 << 16
    # Padding is random and would not shrink: store it, so big files build fast.
    info.compress_type = zipfile.ZIP_STORED if path.endswith("payload.bin") else zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def build_sdist(spec: DistSpec) -> BuiltDist:
    """A ``.tar.gz`` with PKG-INFO and a setuptools pyproject.toml; valid, rarely installed."""
    if spec.payload_size <= _CACHEABLE_PAYLOAD:
        return _build_sdist_cached(spec)
    return _build_sdist(spec)


@functools.lru_cache(maxsize=8192)
def _build_sdist_cached(spec: DistSpec) -> BuiltDist:
    return _build_sdist(spec)


def _build_sdist(spec: DistSpec) -> BuiltDist:
    root = f"{dist_name(spec.name)}-{spec.version}"
    files = {"PKG-INFO": render_core_metadata(spec), "pyproject.toml": _render_pyproject(spec)}
    files.update(_module_files(spec))
    buffer = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything that varies between runs.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as compressed:
        with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path, data in sorted(files.items()):
                _write_tar_entry(archive, f"{root}/{path}", data)
    return BuiltDist(sdist_filename(spec), buffer.getvalue(), "sdist", "source")


def _write_tar_entry(archive: tarfile.TarFile, path: str, data: bytes) -> None:
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    archive.addfile(info, io.BytesIO(data))


def _render_pyproject(spec: DistSpec) -> bytes:
    lines = [
        "[build-system]",
        'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f'name = "{spec.name}"',
        f'version = "{spec.version}"',
    ]
    if spec.requires_python is not None:
        lines.append(f'requires-python = "{spec.requires_python}"')
    lines.append("dependencies = [" + ", ".join(_toml_string(d) for d in spec.dependencies) + "]")
    return ("\n".join(lines) + "\n").encode()


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_release(spec: DistSpec, *, sdist: bool, wheel: bool) -> tuple[BuiltDist, ...]:
    """The files of one release, sorted by filename as PyPI lists them."""
    built: list[BuiltDist] = []
    if sdist:
        built.append(build_sdist(spec))
    if wheel:
        built.append(build_wheel(spec))
    return tuple(sorted(built, key=lambda dist: dist.filename))
