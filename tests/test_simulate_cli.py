"""``pypimirror simulate`` as an operator runs it: a real process over stored pages and a log."""

from __future__ import annotations

import gzip
import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from _synthetic_index import popularity_csv_text, synthetic_project_names, write_synthetic_index, zipf_popularity
from pypimirror.jobs import simulate_command
from test_cli import run_cli

from pypimirror.configreader import load_config
from pypimirror.errors import StorageError

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A config over a stored-pages repository of 40 projects, and a 2-day synthetic log of it."""
    root = tmp_path_factory.mktemp("simulate")
    names = synthetic_project_names(40)
    write_synthetic_index(root / "repo", names, seed=5)
    (root / "popularity.csv").write_text(popularity_csv_text(zipf_popularity(names)))
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "repo_path": str(root / "repo"),
        "upstream": {"pypi_url": "https://index.example.org", "packages_url": "https://files.example.org/packages"},
        "cache": {"size_limit": "1g"},
    }))
    log = root / "access.log"
    result = run_cli(
        "simulate", "-c", str(config), "--synthetic", "2", "--requests", "3000",
        "--popularity", str(root / "popularity.csv"), "--seed", "7", "--write-log", str(log),
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 3000 requests over 2 days" in result.stdout
    return config, log


def test_json_has_the_documented_shape_and_one_result_per_budget_and_policy(site: tuple[Path, Path], tmp_path: Path) -> None:
    config, log = site
    out = tmp_path / "result.json"
    result = run_cli("simulate", "-c", str(config), "--log", str(log), "--budgets", "1m,20m", "--json", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert {"requests", "distinct_files", "distinct_bytes", "skipped_lines", "results"} <= document.keys()
    assert document["requests"] == 3000 and document["skipped_lines"] == 0
    assert isinstance(document["distinct_files"], int) and document["distinct_bytes"] > 0
    pairs = [(r["policy"], r["budget"]) for r in document["results"]]
    assert pairs == [(p, b) for b in (1024**2, 20 * 1024**2) for p in ("seed", "default", "lru", "static-greedy")]
    for entry in document["results"]:
        assert 0.0 <= entry["request_hit_rate"] <= 1.0 and 0.0 <= entry["byte_hit_rate"] <= 1.0
        assert isinstance(entry["upstream_bytes"], int)
    greedy = {r["budget"]: r["request_hit_rate"] for r in document["results"] if r["policy"] == "static-greedy"}
    assert greedy[20 * 1024**2] > greedy[1024**2] > 0  # a bigger cache serves more
    assert "static-greedy" in result.stdout and "requests hit" in result.stdout


def test_malformed_lines_and_gzipped_logs_are_read_and_counted(site: tuple[Path, Path], tmp_path: Path) -> None:
    config, log = site
    packed = tmp_path / "access.log.gz"
    packed.write_bytes(gzip.compress(log.read_bytes() + b"this is not a log line\n"))
    out = tmp_path / "result.json"
    result = run_cli(
        "simulate", "-c", str(config), "--log", str(packed), "--budgets", "5m",
        "--policies", "lru,static-greedy", "--json", str(out),
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert (document["requests"], document["skipped_lines"]) == (3000, 1)
    assert [r["policy"] for r in document["results"]] == ["lru", "static-greedy"]


def test_svg_plot_is_well_formed_with_one_line_per_policy(site: tuple[Path, Path], tmp_path: Path) -> None:
    config, log = site
    plot = tmp_path / "hits.svg"
    result = run_cli(
        "simulate", "-c", str(config), "--log", str(log), "--budgets", "1m,4m,20m",
        "--policies", "seed,lru,static-greedy", "--plot", str(plot),
    )
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(plot.read_text())
    assert root.tag == f"{SVG}svg"
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 3 and all(len(line.get("points", "").split()) == 3 for line in lines)
    assert {t.text for t in root.iter(f"{SVG}text")} >= {"seed", "lru", "static-greedy"}


def test_png_plot_without_matplotlib_is_a_clear_error(site: tuple[Path, Path], tmp_path: Path) -> None:
    config, log = site
    result = run_cli(
        "simulate", "-c", str(config), "--log", str(log), "--budgets", "1m",
        "--policies", "lru", "--plot", str(tmp_path / "hits.png"),
    )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.returncode == 2
        assert "needs matplotlib" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "hits.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log", "missing.log", "--budgets", "1g"], "--log 'missing.log': no such file"),
        (["--budgets", "1g,lots"], "--budgets: 'lots' is not a size"),
        (["--budgets", "0"], "--budgets: '0' is not a budget"),
        (["--budgets", "1g", "--policies", "seed,fifo"], "--policies: unknown 'fifo'"),
        (["--budgets", "1g", "--plot", "out.pdf"], "must end in .svg or .png"),
        ([], "simulate needs --log FILE and --budgets"),
        (["--synthetic", "2", "--requests", "10"], "--synthetic needs --popularity, --write-log"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    site: tuple[Path, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    config, log = site
    if args and args[0] == "--budgets":
        args = ["--log", str(log), *args]
    result = run_cli("simulate", "-c", str(config), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("pypimirror: error: ") and message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("forks", [True, False], ids=["scan-in-a-child", "scan-in-process"])
def test_the_stored_pages_are_scanned_alike_in_a_child_or_in_process(
    site: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: bool
) -> None:
    config_path, log = site
    monkeypatch.setattr(simulate_command, "fork_is_safe", lambda: forks)
    out = tmp_path / "result.json"
    common = dict(logs=[log], log_format="auto", path_prefix=None, budgets=[1024**2, 20 * 1024**2],
                  policies=["seed", "default", "lru", "static-greedy"], plot_out=None, stdout=io.StringIO())
    simulate_command.run_simulation(load_config(config_path), json_out=out, **common)  # type: ignore[arg-type]
    expected = tmp_path / "expected.json"
    result = run_cli("simulate", "-c", str(config_path), "--log", str(log), "--budgets", "1m,20m", "--json", str(expected))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document == json.loads(expected.read_text())
    assert document["distinct_files"] > 0 and document["requests"] == 3000


def _fail() -> None:
    raise ValueError("the pages are gone")


def _vanish() -> None:
    os._exit(7)


def test_work_in_a_forked_child_returns_its_result_or_a_storage_error_saying_what_failed() -> None:
    if not simulate_command.fork_is_safe():  # then the work would run here, and _vanish end pytest
        pytest.skip("this process cannot fork safely now: another thread runs")
    assert simulate_command._in_child(lambda: {"a": 1}, name="t", what="the test's work") == {"a": 1}
    with pytest.raises(StorageError, match="^the test's work failed: the pages are gone$"):
        simulate_command._in_child(_fail, name="t", what="the test's work")
    with pytest.raises(StorageError, match=r"^the test's work ended without a result \(exit code 7\)$"):
        simulate_command._in_child(_vanish, name="t", what="the test's work")
