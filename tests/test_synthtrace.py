"""Synthetic traces: the model's promises, checked on traces read back with the trace reader."""

from __future__ import annotations

import collections
import gzip
import hashlib
from pathlib import Path

import pytest
from _synthetic_index import popularity_csv_text, synthetic_project_names, write_synthetic_index, zipf_popularity
from packaging.utils import NormalizedName

from pypimirror.errors import StorageError, TraceInputError
from pypimirror.pagescan import ListedFile, scan_listed_files
from pypimirror.popularity import read_popularity_csv
from pypimirror.synthtrace import SyntheticModel, SyntheticSummary, write_synthetic_trace
from pypimirror.trace import TraceReader, TraceRequest

END = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
DAY = 86_400.0
MANYLINUX = "manylinux_2_17_x86_64.manylinux2014_x86_64"
AARCH64 = "manylinux_2_17_aarch64.manylinux2014_aarch64"


def listed_file(project: str, version: str, filename: str, uploaded: float, size: int = 1000) -> ListedFile:
    digest = hashlib.sha256(filename.encode()).hexdigest()
    path = f"{digest[:2]}/{digest[2:4]}/{digest[4:24]}/{filename}"
    return ListedFile(path, size, NormalizedName(project), version, filename, uploaded)


FILES = [
    # alpha releases 2.0 in the middle of a 10-day window ending at END.
    listed_file("alpha", "1.0", "alpha-1.0-py3-none-any.whl", END - 100 * DAY),
    listed_file("alpha", "1.0", "alpha-1.0.tar.gz", END - 100 * DAY),
    listed_file("alpha", "2.0", "alpha-2.0-py3-none-any.whl", END - 5 * DAY),
    listed_file("alpha", "2.0", "alpha-2.0.tar.gz", END - 5 * DAY),
    # beta: three releases before the window, and a pre-release that is the highest version.
    listed_file("beta", "1.0", "beta-1.0-py3-none-any.whl", END - 50 * DAY),
    listed_file("beta", "1.1", "beta-1.1-py3-none-any.whl", END - 40 * DAY),
    listed_file("beta", "1.2", "beta-1.2-py3-none-any.whl", END - 30 * DAY),
    listed_file("beta", "2.0b1", "beta-2.0b1-py3-none-any.whl", END - 20 * DAY),
    # gamma: binary wheels for some platforms and Pythons, one abi3 wheel, an sdist.
    listed_file("gamma", "3.0", f"gamma-3.0-cp312-cp312-{MANYLINUX}.whl", END - 60 * DAY, 5000),
    listed_file("gamma", "3.0", f"gamma-3.0-cp311-cp311-{MANYLINUX}.whl", END - 60 * DAY, 5000),
    listed_file("gamma", "3.0", "gamma-3.0-cp312-cp312-macosx_11_0_arm64.whl", END - 60 * DAY, 4000),
    listed_file("gamma", "3.0", "gamma-3.0-cp312-cp312-win_amd64.whl", END - 60 * DAY, 3000),
    listed_file("gamma", "3.0", f"gamma-3.0-cp39-abi3-{AARCH64}.whl", END - 60 * DAY, 4500),
    listed_file("gamma", "3.0", "gamma-3.0.tar.gz", END - 60 * DAY, 9000),
    # delta is in no popularity list: only the long tail reaches it.
    listed_file("delta", "0.1", "delta-0.1.tar.gz", END - 300 * DAY),
]
LISTED = {f.path: f for f in FILES}
BY_FILENAME = {f.filename: f for f in FILES}
POPULARITY = {
    NormalizedName("alpha"): 1000,
    NormalizedName("beta"): 1000,
    NormalizedName("gamma"): 1000,
    NormalizedName("no-pages"): 500,
}


def synthesize(
    out: Path, *, requests: int = 20_000, seed: int = 1, days: int = 10, **knobs: object
) -> tuple[SyntheticSummary, list[TraceRequest]]:
    model = SyntheticModel(**knobs)  # type: ignore[arg-type]
    summary = write_synthetic_trace(
        out, listed=LISTED, popularity=POPULARITY, days=days, requests=requests, seed=seed, model=model, end_time=END
    )
    reader = TraceReader([out], log_format="combined", path_prefix=model.prefix)
    trace = list(reader)
    assert reader.stats.skipped_lines == 0 and reader.stats.out_of_prefix == 0
    return summary, trace


def filenames(trace: list[TraceRequest]) -> collections.Counter[str]:
    return collections.Counter(LISTED[r.path].filename for r in trace)


# --------------------------------------------------------------------------- the trace itself


def test_the_trace_reads_back_in_time_order_inside_its_window(tmp_path: Path) -> None:
    summary, trace = synthesize(tmp_path / "trace.log")
    assert len(trace) == summary.requests == 20_000
    times = [r.time for r in trace]
    assert times == sorted(times)
    assert END - 10 * DAY <= times[0] and times[-1] < END
    assert (summary.start_time, summary.end_time) == (END - 10 * DAY, END)
    assert all(r.path in LISTED for r in trace)
    assert summary.distinct_files == len({r.path for r in trace})
    assert summary.distinct_bytes == sum(LISTED[p].size for p in {r.path for r in trace})
    assert (summary.projects, summary.missing_projects) == (3, 1)
    assert (tmp_path / "trace.log").stat().st_mode & 0o777 == 0o644


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    synthesize(tmp_path / "a.log", requests=2000, seed=5)
    synthesize(tmp_path / "b.log", requests=2000, seed=5)
    synthesize(tmp_path / "c.log", requests=2000, seed=6)
    assert (tmp_path / "a.log").read_bytes() == (tmp_path / "b.log").read_bytes()
    assert (tmp_path / "a.log").read_bytes() != (tmp_path / "c.log").read_bytes()


def test_a_gz_name_writes_a_gzipped_trace_deterministically(tmp_path: Path) -> None:
    summary, trace = synthesize(tmp_path / "a.log.gz", requests=3000, seed=2)
    synthesize(tmp_path / "b.log.gz", requests=3000, seed=2)
    packed = (tmp_path / "a.log.gz").read_bytes()
    assert packed[:2] == b"\x1f\x8b"
    assert packed == (tmp_path / "b.log.gz").read_bytes()
    assert len(trace) == 3000
    assert gzip.decompress(packed).count(b"\n") == 3000


def test_projects_without_stored_pages_are_never_requested_and_popular_ones_share_by_downloads(tmp_path: Path) -> None:
    _, trace = synthesize(tmp_path / "trace.log", tail_share=0.0)
    per_project = collections.Counter(LISTED[r.path].project for r in trace)
    assert set(per_project) == {"alpha", "beta", "gamma"}
    for project in ("alpha", "beta", "gamma"):
        assert 0.28 < per_project[project] / len(trace) < 0.39


def test_the_newest_final_release_takes_most_downloads_and_older_ones_ever_fewer(tmp_path: Path) -> None:
    _, trace = synthesize(tmp_path / "trace.log", tail_share=0.0, sdist_share=0.0)
    beta = filenames(r for r in trace if LISTED[r.path].project == "beta")  # type: ignore[arg-type]
    total = sum(beta.values())
    # Finals first (1.2, 1.1, 1.0), then the pre-release: 0.7, then 0.3 decaying by half.
    expected = {"1.2": 0.7, "1.1": 0.3 * 4 / 7, "1.0": 0.3 * 2 / 7, "2.0b1": 0.3 * 1 / 7}
    for version, share in expected.items():
        assert beta[f"beta-{version}-py3-none-any.whl"] / total == pytest.approx(share, abs=0.03)


def test_a_release_inside_the_window_takes_over_within_a_day(tmp_path: Path) -> None:
    _, trace = synthesize(tmp_path / "trace.log", tail_share=0.0, sdist_share=0.0)
    release = END - 5 * DAY

    def new_share(start: float, end: float) -> float:
        alpha = [LISTED[r.path].version for r in trace if LISTED[r.path].project == "alpha" and start <= r.time < end]
        return alpha.count("2.0") / len(alpha)

    assert new_share(END - 10 * DAY, release) == 0.0  # not there before its upload
    assert 0.2 < new_share(release, release + DAY) < 0.5  # taking over (0.35 on average over the ramp)
    assert new_share(release + DAY, END) == pytest.approx(0.7, abs=0.04)  # the newest release's share


def test_wheels_follow_the_platform_and_python_mix_and_fall_back_to_the_sdist(tmp_path: Path) -> None:
    _, trace = synthesize(
        tmp_path / "trace.log",
        tail_share=0.0,
        sdist_share=0.0,
        platform_mix={"manylinux-x86_64": 0.5, "macos-arm64": 0.3, "manylinux-aarch64": 0.2},
        python_mix={"3.12": 0.5, "3.11": 0.5},
    )
    gamma = filenames(r for r in trace if LISTED[r.path].project == "gamma")  # type: ignore[arg-type]
    total = sum(gamma.values())
    expected = {
        f"gamma-3.0-cp312-cp312-{MANYLINUX}.whl": 0.25,
        f"gamma-3.0-cp311-cp311-{MANYLINUX}.whl": 0.25,
        "gamma-3.0-cp312-cp312-macosx_11_0_arm64.whl": 0.15,
        "gamma-3.0.tar.gz": 0.15,  # macOS on 3.11 has no wheel: built from the sdist
        f"gamma-3.0-cp39-abi3-{AARCH64}.whl": 0.2,  # abi3 serves every Python from 3.9
    }
    assert set(gamma) == set(expected)
    for filename, share in expected.items():
        assert gamma[filename] / total == pytest.approx(share, abs=0.03)


def test_sdists_are_rare_when_wheels_fit(tmp_path: Path) -> None:
    _, trace = synthesize(tmp_path / "trace.log", tail_share=0.0)
    alpha = filenames(r for r in trace if LISTED[r.path].project == "alpha")  # type: ignore[arg-type]
    sdists = alpha["alpha-1.0.tar.gz"] + alpha["alpha-2.0.tar.gz"]
    assert sdists / sum(alpha.values()) == pytest.approx(0.02, abs=0.01)


def test_one_off_requests_reach_unpopular_projects(tmp_path: Path) -> None:
    summary, trace = synthesize(tmp_path / "trace.log", tail_share=0.2)
    assert summary.tail_requests / summary.requests == pytest.approx(0.2, abs=0.02)
    assert filenames(trace)["delta-0.1.tar.gz"] > 0
    _, without = synthesize(tmp_path / "none.log", tail_share=0.0)
    assert filenames(without)["delta-0.1.tar.gz"] == 0


def test_one_off_requests_never_ask_for_files_before_their_upload(tmp_path: Path) -> None:
    _, trace = synthesize(tmp_path / "trace.log", tail_share=1.0)
    uploads = [LISTED[r.path].upload_time for r in trace]
    assert all(uploaded is not None and uploaded <= r.time for uploaded, r in zip(uploads, trace, strict=True))


def test_a_popular_project_not_yet_released_gives_its_downloads_to_files_that_exist(tmp_path: Path) -> None:
    late = listed_file("late", "1.0", "late-1.0.tar.gz", END + 10 * DAY)
    early = listed_file("early", "1.0", "early-1.0.tar.gz", END - 10 * DAY)
    out = tmp_path / "trace.log"
    summary = write_synthetic_trace(
        out, listed={late.path: late, early.path: early}, popularity={NormalizedName("late"): 1},
        days=2, requests=200, seed=1, model=SyntheticModel(tail_share=0.0), end_time=END,
    )
    assert {r.path for r in TraceReader([out])} == {early.path}
    assert summary.tail_requests == 200


def test_clients_come_from_thousands_of_networks_a_few_of_them_busy(tmp_path: Path) -> None:
    summary, trace = synthesize(tmp_path / "trace.log", networks=3000)
    networks = collections.Counter(r.client.rpartition(".")[0] for r in trace)
    assert len(networks) == summary.networks > 1500
    assert all(client.startswith("10.") for client in networks)
    busiest = networks.most_common(1)[0][1] / len(trace)
    assert 0.08 < busiest < 0.16  # Zipf over 3,000 ranks: the first has 1/H(3000), about 12 %


def test_traffic_follows_a_daily_cycle_and_quieter_weekends(tmp_path: Path) -> None:
    _, trace = synthesize(tmp_path / "trace.log", days=14, daily_amplitude=0.5, peak_hour_utc=14, weekend_factor=0.5)
    by_hour = collections.Counter(int(r.time % DAY // 3600) for r in trace)
    assert by_hour[14] > 2.5 * by_hour[2]
    by_weekday = collections.Counter(int((r.time // DAY + 3) % 7) for r in trace)  # 0 = Monday
    assert by_weekday[5] + by_weekday[6] < 0.6 * (by_weekday[1] + by_weekday[2])


def test_metadata_requests_are_optional_and_the_reader_excludes_them(tmp_path: Path) -> None:
    out = tmp_path / "trace.log"
    summary = write_synthetic_trace(
        out, listed=LISTED, popularity=POPULARITY, days=2, requests=4000, seed=3,
        model=SyntheticModel(metadata_share=0.5), end_time=END,
    )
    reader = TraceReader([out])
    assert len(list(reader)) == 4000
    assert summary.metadata_requests == reader.stats.excluded
    assert summary.metadata_requests == pytest.approx(2000, rel=0.1)
    synthesize(tmp_path / "plain.log", requests=500)  # off by default
    assert b".metadata" not in (tmp_path / "plain.log").read_bytes()


def test_a_custom_prefix_and_encoded_file_names_read_back(tmp_path: Path) -> None:
    local = listed_file("alpha", "1.0+local", "alpha-1.0+local-py3-none-any.whl", END - 100 * DAY)
    out = tmp_path / "trace.log"
    write_synthetic_trace(
        out, listed={local.path: local}, popularity={NormalizedName("alpha"): 1}, days=1, requests=50, seed=1,
        model=SyntheticModel(prefix="/mirror/pypi"), end_time=END,
    )
    assert b"%2Blocal" in out.read_bytes()
    assert {r.path for r in TraceReader([out], path_prefix="/mirror/pypi")} == {local.path}


def test_the_default_window_ends_at_the_midnight_after_the_newest_upload(tmp_path: Path) -> None:
    summary = write_synthetic_trace(
        tmp_path / "trace.log", listed=LISTED, popularity=POPULARITY, days=3, requests=10, seed=1
    )
    assert summary.end_time == END - 5 * DAY + DAY  # alpha 2.0, at midnight END - 5 days
    assert summary.start_time == summary.end_time - 3 * DAY


def test_a_synthetic_repository_and_csv_make_a_trace_end_to_end(tmp_path: Path) -> None:
    names = synthetic_project_names(60)
    write_synthetic_index(tmp_path / "repo", names, seed=4)
    csv_path = tmp_path / "popular.csv"
    csv_path.write_text(popularity_csv_text(zipf_popularity(names[:50])))
    listed = scan_listed_files(tmp_path / "repo", "/pypi")
    summary = write_synthetic_trace(
        tmp_path / "trace.log.gz", listed=listed, popularity=read_popularity_csv(csv_path), days=7, requests=5000, seed=9
    )
    trace = list(TraceReader([tmp_path / "trace.log.gz"]))
    assert len(trace) == 5000 and summary.projects == 50
    assert all(r.path in listed for r in trace)
    counts = collections.Counter(listed[r.path].project for r in trace)
    assert counts["proj-00001"] > counts["proj-00010"] > counts["proj-00050"]


# --------------------------------------------------------------------------- bad input


def test_no_listed_files_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "trace.log"
    out.write_text("an older trace\n")
    with pytest.raises(TraceInputError, match="list no file"):
        write_synthetic_trace(out, listed={}, popularity=POPULARITY, days=1, requests=10, seed=1)
    assert out.read_text() == "an older trace\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trace.log"]


def test_an_output_that_cannot_be_written_is_a_storage_error_leaving_no_temp_file(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(StorageError, match="cannot write the trace .*taken"):
        write_synthetic_trace(taken, listed=LISTED, popularity=POPULARITY, days=1, requests=10, seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
    assert list(taken.iterdir()) == []


def test_a_popularity_list_without_any_stored_project_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TraceInputError, match="none of its 1 projects has a stored page"):
        write_synthetic_trace(
            tmp_path / "t.log", listed=LISTED, popularity={NormalizedName("nope"): 5}, days=1, requests=10, seed=1
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"newest_share": 1.5}, "newest_share"),
        ({"tail_share": -0.1}, "tail_share"),
        ({"networks": 0}, "networks"),
        ({"networks": 70_000}, "networks"),
        ({"peak_hour_utc": 24}, "peak_hour_utc"),
        ({"platform_mix": {}}, "platform_mix"),
        ({"platform_mix": {"linux": 1.0}}, "unknown platforms \\['linux'\\]"),
        ({"python_mix": {"3.12": -1.0}}, "python_mix"),
        ({"python_mix": {"twelve": 1.0}}, "'twelve'"),
        ({"release_ramp_hours": -1}, "release_ramp_hours"),
    ],
)
def test_knobs_out_of_range_are_refused_by_name(tmp_path: Path, knobs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_synthetic_trace(
            tmp_path / "t.log", listed=LISTED, popularity=POPULARITY, days=1, requests=10, seed=1,
            model=SyntheticModel(**knobs),  # type: ignore[arg-type]
        )
    assert list(tmp_path.iterdir()) == []


def test_days_and_requests_out_of_range_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="days"):
        write_synthetic_trace(tmp_path / "t.log", listed=LISTED, popularity=POPULARITY, days=0, requests=10, seed=1)
    with pytest.raises(ValueError, match="requests"):
        write_synthetic_trace(tmp_path / "t.log", listed=LISTED, popularity=POPULARITY, days=1, requests=-1, seed=1)
