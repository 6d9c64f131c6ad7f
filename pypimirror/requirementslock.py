"""Reading a pip requirements file (``pip-compile``/``uv pip compile`` output or by hand) as a lock.

Why its own reader rather than pip's: pip is not a library, and pinning needs less and more
than installing: only exact ``==`` pins make a set (anything looser is reported with its line),
``--hash`` values identify the files, index options are irrelevant (a file is identified by name
and sha256 wherever it was listed), and nothing is ever fetched. Lines follow pip's rules:
``\\`` continues a line, ``#`` after whitespace starts a comment, ``-r``/``-c`` include other
files relative to the including one (each file is read once; a cycle is reported).
"""

from __future__ import annotations

__all__ = ["first_line", "parse_requirements", "read_text"]

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import LockfileError
from .lockmodel import FileEntry, LockEntry, LockfileProblem, SkippedEntry, VersionPin
from .pinselect import marker_may_apply

_COMMENT = re.compile(r"(^|\s+)#.*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_INCLUDE_OPTIONS = {"-r": False, "--requirement": False, "-c": True, "--constraint": True}
_EDITABLE_OPTIONS = {"-e", "--editable"}
_INDEX_OPTIONS = {"-i", "--index-url", "--extra-index-url", "--no-index", "-f", "--find-links", "--trusted-host"}
_IGNORED_OPTIONS = {"--pre", "--prefer-binary", "--only-binary", "--no-binary", "--require-hashes", "--use-feature"}
# Options that stand alone, without a value.
_FLAG_OPTIONS = {"--no-index", "--pre", "--prefer-binary", "--require-hashes"}
_DIRECT_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*@")
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar")


def first_line(exc: Exception) -> str:
    """packaging's parse errors draw a caret under the text on more lines; a report is one line."""
    return (str(exc).splitlines() or [""])[0]


def read_text(path: Path, shown: str) -> str:
    """The file as text (UTF-8, a BOM allowed), or a ``LockfileError`` naming ``shown``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LockfileError(shown, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LockfileError(shown, f"byte {exc.start}", "not UTF-8 text") from exc


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, line without comments) of each non-empty logical line, as pip joins them."""
    joined: list[str] = []
    first = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.endswith("\\") and not _COMMENT.match(line):
            if not joined:
                first = number
            joined.append(line[:-1])
            continue
        if joined:
            joined.append(" " + line if _COMMENT.match(line) else line)
            number, line = first, "".join(joined)
            joined = []
        stripped = _COMMENT.sub("", line).strip()
        if stripped:
            yield number, stripped
    if joined:  # a continuation on the last line: pip reads what it has
        stripped = _COMMENT.sub("", "".join(joined)).strip()
        if stripped:
            yield first, stripped


def _split_option(tokens: list[str]) -> tuple[str, str | None, list[str]]:
    """``--opt=value`` or ``--opt value`` or ``-rfile`` → (option, value, remaining tokens)."""
    head = tokens[0]
    if head.startswith("--") and "=" in head:
        option, value = head.split("=", 1)
        return option, value, tokens[1:]
    if not head.startswith("--") and len(head) > 2:
        return head[:2], head[2:], tokens[1:]
    if head in _FLAG_OPTIONS or len(tokens) == 1:
        return head, None, tokens[1:]
    return head, tokens[1], tokens[2:]


def _looks_like_path_or_url(text: str) -> bool:
    """pip's rule of thumb: a path or URL, unless it is a ``name @ url`` direct reference."""
    requirement = text.split(";", 1)[0].strip()
    if _DIRECT_REFERENCE.match(requirement):
        return False
    return ("/" in requirement or "\\" in requirement or requirement.startswith(".")
            or requirement.endswith(_ARCHIVE_SUFFIXES))


@dataclass
class _Reader:
    """Reads one requirements file and, depth first, what it includes; gathers every result."""

    platforms: Sequence[str]
    pythons: Sequence[str]
    entries: list[LockEntry] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
    problems: list[LockfileProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)

    def read(self, path: Path, shown: str, text: str, stack: tuple[Path, ...], constraint: bool) -> None:
        resolved = path.resolve()
        self.seen.add(resolved)
        stack = (*stack, resolved)
        for number, line in _logical_lines(text):
            where = f"line {number}"
            tokens = line.split()
            if tokens[0].startswith("-"):
                self._read_option(path, shown, where, tokens, stack, constraint)
            else:
                self._read_requirement(shown, where, tokens, constraint)

    def _problem(self, shown: str, where: str, reason: str) -> None:
        self.problems.append(LockfileProblem(shown, where, reason))

    def _read_option(self, path: Path, shown: str, where: str, tokens: list[str],
                     stack: tuple[Path, ...], constraint: bool) -> None:
        option, value, rest = _split_option(tokens)
        if option in _INCLUDE_OPTIONS:
            if not value:
                self._problem(shown, where, f"{option} needs a file name")
            else:
                self._include(path, shown, where, value, stack, constraint or _INCLUDE_OPTIONS[option])
        elif option in _EDITABLE_OPTIONS:
            self.skipped.append(SkippedEntry(None, f"editable {value!r}: a local checkout, not an index file",
                                             f"{shown}: {where}"))
        elif option in _INDEX_OPTIONS:
            self.notes.append(f"{shown}: {where}: {option} ignored: files are identified by name and sha256, "
                              "whichever index lists them")
        elif option in _IGNORED_OPTIONS:
            self.notes.append(f"{shown}: {where}: {option} ignored: it changes nothing about which files are pinned")
        elif option == "--hash":
            self._problem(shown, where, "--hash without a requirement before it")
        else:
            self._problem(shown, where, f"unknown option {option!r}")
        if rest and option != "--hash":
            self._problem(shown, where, f"unexpected text after {option}: {' '.join(rest)!r}")

    def _include(self, path: Path, shown: str, where: str, name: str, stack: tuple[Path, ...], constraint: bool) -> None:
        if "://" in name:
            self._problem(shown, where, f"include {name!r} is a URL; only local files are read")
            return
        target = path.parent / name
        resolved = target.resolve()
        if resolved in stack:
            chain = " -> ".join(p.name for p in (*stack[stack.index(resolved):], resolved))
            self._problem(shown, where, f"include cycle: {chain}")
            return
        if resolved in self.seen:
            return  # included twice without a cycle: its lines are already read
        target_shown = str(Path(shown).parent / name)
        try:
            text = read_text(target, target_shown)
        except LockfileError as exc:
            self._problem(shown, where, f"include {name!r}: {exc.reason}")
            return
        self.read(target, target_shown, text, stack, constraint)

    def _read_requirement(self, shown: str, where: str, tokens: list[str], constraint: bool) -> None:
        cut = next((i for i, token in enumerate(tokens) if token.startswith("-")), len(tokens))
        text = " ".join(tokens[:cut])
        hashes, hash_problems = _read_hash_options(tokens[cut:])
        located = f"{shown}: {where}"
        if _looks_like_path_or_url(text):
            self.skipped.append(SkippedEntry(None, f"{text!r} is a path or URL, not an index project", located))
            return
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            self._problem(shown, where, f"cannot parse requirement {text!r}: {first_line(exc)}")
            return
        project = canonicalize_name(requirement.name)
        if requirement.url is not None:
            self.skipped.append(SkippedEntry(project, f"a direct URL ({requirement.url}), not an index file", located))
            return
        if constraint:
            self.skipped.append(SkippedEntry(project, "in a constraints file: it limits versions, installs nothing",
                                             located))
            return
        specifiers = list(requirement.specifier)
        if (len(specifiers) != 1 or specifiers[0].operator not in ("==", "===")
                or specifiers[0].version.endswith(".*")):
            self._problem(shown, where, f"{text!r} is not pinned to one version with ==")
            return
        for problem in hash_problems:
            self._problem(shown, where, problem)
        version = specifiers[0].version
        try:
            Version(version)
        except InvalidVersion:
            self._problem(shown, where, f"{version!r} is not a standard (PEP 440) version: no file can be matched to it")
            return
        marker = str(requirement.marker) if requirement.marker is not None else None
        try:
            applies = marker is None or marker_may_apply(marker, self.platforms, self.pythons)
        except InvalidMarker as exc:  # Requirement parsed it, so this is a defensive guard only
            self._problem(shown, where, f"bad marker {marker!r}: {first_line(exc)}")
            return
        if not applies:
            self.skipped.append(SkippedEntry(project, f"marker {marker!r} excludes every requested Python/platform",
                                             located))
            return
        sha256s = [digest for algorithm, digest in hashes if algorithm == "sha256"]
        others = sorted({algorithm for algorithm, _ in hashes if algorithm != "sha256"})
        if not hashes:
            if not hash_problems:
                self.entries.append(VersionPin(project, version, marker, located))
        elif not sha256s:
            self._problem(shown, where, f"only {', '.join(others)} hashes; files are identified by sha256")
        else:
            self.entries.extend(FileEntry(project, version, None, digest, None, located) for digest in sha256s)


def _read_hash_options(tokens: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``--hash`` values after a requirement as (algorithm, lowercase digest), and what is wrong."""
    hashes: list[tuple[str, str]] = []
    problems: list[str] = []
    while tokens:
        option, value, tokens = _split_option(tokens)
        if option != "--hash":
            problems.append(f"option {option!r} after a requirement is not read")
            continue
        algorithm, _, digest = (value or "").partition(":")
        if not digest:
            problems.append(f"--hash {value!r} is not algorithm:digest")
        elif algorithm == "sha256" and not _SHA256.match(digest):
            problems.append(f"--hash {value!r} is not a sha256 digest (64 hex digits)")
        else:
            hashes.append((algorithm.lower(), digest.lower()))
    return hashes, problems


def parse_requirements(
    path: Path, text: str, *, platforms: Sequence[str] = (), pythons: Sequence[str] = ()
) -> tuple[tuple[LockEntry, ...], tuple[SkippedEntry, ...], tuple[LockfileProblem, ...], tuple[str, ...]]:
    """(entries, skipped, problems, notes) of the requirements ``text`` read from ``path``.

    Included files are read from disk relative to ``path``; a missing one is a problem, not fatal.
    """
    reader = _Reader(platforms, pythons)
    reader.read(path, str(path), text, (), False)
    return tuple(reader.entries), tuple(reader.skipped), tuple(reader.problems), tuple(reader.notes)
