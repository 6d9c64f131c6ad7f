"""The deployment files in ``contrib/`` work, checked without Docker or systemd running.

The Dockerfile's entrypoint and healthcheck run here against a temp repo with this venv's
``pypimirror``; unit files, the logrotate file and the nginx example go through their own
tools' checkers where the machine has them (``systemd-analyze verify``, ``logrotate -d``,
``nginx -t``), and through structural checks everywhere.
"""

from __future__ import annotations

import configparser
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeindex import FakeIndex
from mirrorprocess import free_port, request, running_server, stop_server, sync_once, write_config
from prometheus_client.parser import text_string_to_metric_families

from pypimirror.configreader import load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
CONTRIB = REPO / "contrib"
VENV_BIN = Path(sys.executable).parent
DOCKER_CONFIG = CONTRIB / "config.docker.yaml"


# -- the Dockerfile ---------------------------------------------------------------------------------


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continued lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list; the shell form is refused (signals would miss the server)."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


def the(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [arguments for kw, arguments in instructions if kw == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(CONTRIB / "Dockerfile")


def healthcheck_command(instructions: list[tuple[str, str]]) -> list[str]:
    options, _, command = the(final_stage(instructions), "HEALTHCHECK").partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return exec_form(command)


def test_dockerfile_builds_a_small_python_image_that_runs_as_a_user_with_the_repo_on_a_volume(
    dockerfile: list[tuple[str, str]],
) -> None:
    name, _, default = the(dockerfile, "ARG").partition("=")
    assert name == "BASE_IMAGE"
    version = re.fullmatch(r"python:(\d+)\.(\d+)-slim", default)
    assert version and (int(version[1]), int(version[2])) >= (3, 13), default  # the newest supported Python
    bases = [arguments.split()[0] for keyword, arguments in dockerfile if keyword == "FROM"]
    assert len(bases) == 2 and all(base == "${BASE_IMAGE}" for base in bases), bases
    stage = final_stage(dockerfile)
    user = the(stage, "USER")
    assert user not in ("root", "0")
    assert any(keyword == "RUN" and "useradd" in args and user in args for keyword, args in stage)
    config = load_config(DOCKER_CONFIG)
    assert exec_form(the(stage, "VOLUME")) == [str(config.repo_path)]
    assert the(stage, "EXPOSE") == str(config.listen_address[1])
    env = dict(re.findall(r"(\w+)=(\S+)", the(stage, "ENV")))
    assert env["PYPIMIRROR_CONFIG"] == "/etc/pypimirror/config.yaml"


def test_dockerfile_copies_every_package_directory_and_nothing_else(dockerfile: list[tuple[str, str]]) -> None:
    copied = [args.split()[:-1] for keyword, args in dockerfile if keyword == "COPY" and not args.startswith("--from")]
    sources = {source for sources in copied for source in sources}
    assert sources == {"pyproject.toml", "README.md", "pypimirror", "handlers", "jobs"}
    assert all((REPO / source).exists() for source in sources)


def test_dockerfile_entrypoint_is_serve_with_scheduler_and_the_healthcheck_is_pypimirrors(
    dockerfile: list[tuple[str, str]],
) -> None:
    stage = final_stage(dockerfile)
    assert exec_form(the(stage, "ENTRYPOINT")) + exec_form(the(stage, "CMD")) == [
        "pypimirror", "serve", "--with-scheduler",
    ]
    assert healthcheck_command(dockerfile) == ["pypimirror", "healthcheck"]


@pytest.fixture
def container_config(tmp_path: Path, fake_index: FakeIndex) -> Path:
    """contrib's container configuration with a temp repo, a free port and the fake upstream."""
    fake_index.add_many(3)
    data: dict[str, Any] = yaml.safe_load(DOCKER_CONFIG.read_text())
    data.update(listen=f"127.0.0.1:{free_port()}", repo_path=str(tmp_path / "srv"), shutdown_grace="5s")
    data["upstream"] = {"pypi_url": fake_index.pypi_url, "packages_url": fake_index.packages_url}
    data["schedule"]["jitter"] = "0s"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def container(dockerfile: list[tuple[str, str]], container_config: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The image's ENTRYPOINT + CMD run as the container would, configured through its ENV variable.

    Yields the port it serves on and its log; stopped with the image's STOPSIGNAL afterwards.
    """
    stage = final_stage(dockerfile)
    command = exec_form(the(stage, "ENTRYPOINT")) + exec_form(the(stage, "CMD"))
    command[0] = str(VENV_BIN / command[0])
    log = tmp_path / "container.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stderr=stderr, cwd=tmp_path,
                                   env={**os.environ, "PYPIMIRROR_CONFIG": str(container_config)})
    try:
        deadline = time.monotonic() + 20
        while not (serving := re.search(r"serving http://127\.0\.0\.1:(\d+)/", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield int(serving[1]), log
        process.send_signal(getattr(signal, the(stage, "STOPSIGNAL")))
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_healthcheck(dockerfile: list[tuple[str, str]], config: Path) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, configured as in the container (through its ENV variable)."""
    command = healthcheck_command(dockerfile)
    command[0] = str(VENV_BIN / command[0])
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYPIMIRROR_CONFIG": str(config)})


def test_the_images_command_serves_syncs_and_passes_its_healthcheck(
    dockerfile: list[tuple[str, str]], container: tuple[int, Path], container_config: Path
) -> None:
    port, log = container
    healthy = run_healthcheck(dockerfile, container_config)
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout == f"http://127.0.0.1:{port}/healthz: 200 ok\n"
    deadline = time.monotonic() + 20
    while "index sync: done" not in log.read_text():  # the embedded scheduler's first pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    repo = load_config(container_config).repo_path
    assert (repo / "simple" / "proj-0000" / "index.v1_json").exists()


def test_the_healthcheck_fails_saying_why_when_nothing_answers(
    dockerfile: list[tuple[str, str]], container_config: Path
) -> None:
    port = load_config(container_config).listen_address[1]  # free a moment ago; nothing serves it
    result = run_healthcheck(dockerfile, container_config)
    assert result.returncode == 1
    assert result.stderr.startswith(f"http://127.0.0.1:{port}/healthz: ") and "refused" in result.stderr


def test_the_healthcheck_fails_on_an_unhealthy_answer(dockerfile: list[tuple[str, str]], tmp_path: Path) -> None:
    with socket.socket() as listener:  # a server that answers every request with 503
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({**yaml.safe_load(DOCKER_CONFIG.read_text()), "listen": f"127.0.0.1:{port}"}))
        command = healthcheck_command(dockerfile)
        checker = subprocess.Popen([str(VENV_BIN / command[0]), *command[1:]], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYPIMIRROR_CONFIG": str(config)})
        connection, _ = listener.accept()
        with connection:
            assert connection.recv(4096).startswith(b"GET /healthz HTTP/1.1")
            connection.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 22\r\nConnection: close\r\n\r\n"
                               b"database: unreachable\n")
        _, stderr = checker.communicate(timeout=30)
    assert checker.returncode == 1
    assert stderr == f"http://127.0.0.1:{port}/healthz: 503 database: unreachable\n"


# -- compose ----------------------------------------------------------------------------------------


def test_compose_file_builds_the_dockerfile_and_mounts_the_volume_and_config() -> None:
    compose = yaml.safe_load((CONTRIB / "compose.yaml").read_text())
    mirror = compose["services"]["mirror"]
    assert (CONTRIB / mirror["build"]["context"] / mirror["build"]["dockerfile"]).resolve() == CONTRIB / "Dockerfile"
    instructions = final_stage(parse_dockerfile(CONTRIB / "Dockerfile"))
    volume = exec_form(the(instructions, "VOLUME"))[0]
    config_path = dict(re.findall(r"(\w+)=(\S+)", the(instructions, "ENV")))["PYPIMIRROR_CONFIG"]
    for service in (mirror, compose["services"]["sync"]):
        targets = {mount.split(":")[1]: mount.split(":")[0] for mount in service["volumes"]}
        assert targets[volume] in compose["volumes"]
        assert targets[config_path] == "./config.yaml"
        assert _seconds(service["stop_grace_period"]) > load_config(DOCKER_CONFIG).shutdown_grace.total_seconds()
    sync = compose["services"]["sync"]
    assert sync["command"] == ["sync"] and sync["pid"] == "service:mirror"
    assert mirror["ports"] == [f"{load_config(DOCKER_CONFIG).listen_address[1]}:8080"]


def _seconds(duration: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(number) * units[unit] for number, unit in re.findall(r"(\d+)([hms])", duration))


def test_the_container_configuration_loads_and_pins_the_node_id() -> None:
    config = load_config(DOCKER_CONFIG)
    assert config.node_id == "mirror-1"
    assert str(config.repo_path) == "/srv/pypimirror"


# -- systemd ----------------------------------------------------------------------------------------


def read_unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((CONTRIB / "systemd" / name).read_text())
    return parser


def test_serve_unit_runs_the_scheduler_reloads_with_sigusr1_and_outlasts_the_grace_period() -> None:
    unit = read_unit("pypimirror-serve.service")
    service = unit["Service"]
    assert shlex.split(service["ExecStart"])[1:3] == ["serve", "--with-scheduler"]
    assert service["ExecReload"] == "/bin/kill -USR1 $MAINPID"
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    grace = parse_config({"repo_path": "r", "upstream": {"pypi_url": "https://example.org",
                          "packages_url": "https://example.org/p"}, "cache": {"size_limit": "1g"}}).shutdown_grace
    assert int(service["TimeoutStopSec"]) > grace.total_seconds()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_sync_service_and_timer_run_sync_once_hourly_and_accept_a_held_lease() -> None:
    service = read_unit("pypimirror-sync.service")["Service"]
    assert service["Type"] == "oneshot"
    assert shlex.split(service["ExecStart"])[1:3] == ["sync", "--once"]
    assert service["SuccessExitStatus"] == "3"  # cli: another sync holds the lease
    timer = read_unit("pypimirror-sync.timer")
    assert timer["Timer"]["Unit"] == "pypimirror-sync.service"
    assert timer["Timer"]["OnCalendar"] == "hourly" and timer["Timer"]["Persistent"] == "true"


def test_the_sync_units_command_runs(container_config: Path) -> None:
    command = shlex.split(read_unit("pypimirror-sync.service")["Service"]["ExecStart"])
    command[0] = str(VENV_BIN / "pypimirror")
    command[command.index("-c") + 1] = str(container_config)
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "index sync: done" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    names = ["pypimirror-serve.service", "pypimirror-sync.service", "pypimirror-sync.timer"]
    for name in names:  # verify wants the binary to exist: point it at this venv's
        text = (CONTRIB / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/pypimirror/bin/", f"{VENV_BIN}/"))
    result = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / name) for name in names)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    complaints = [line for line in result.stderr.splitlines() if any(name in line for name in names)]
    assert complaints == []


# -- logrotate and nginx ----------------------------------------------------------------------------


def test_logrotate_rotates_the_access_log_and_reloads_the_serve_unit() -> None:
    text = (CONTRIB / "logrotate" / "pypimirror").read_text()
    assert "/var/log/pypimirror/access.log {" in text
    for directive in ("daily", "rotate 30", "compress", "delaycompress", "missingok", "notifempty"):
        assert re.search(rf"^\s+{directive}$", text, re.MULTILINE), directive
    assert "systemctl reload pypimirror-serve.service" in text
    assert (CONTRIB / "systemd" / "pypimirror-serve.service").exists()


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_file_passes_logrotate_debug_mode(tmp_path: Path) -> None:
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    text = (CONTRIB / "logrotate" / "pypimirror").read_text()
    text = text.replace("su pypimirror pypimirror", f"su {user} {group}")
    text = text.replace("/var/log/pypimirror/", f"{tmp_path}/")
    (tmp_path / "access.log").write_text("a line\n")
    conf = tmp_path / "pypimirror.logrotate"
    conf.write_text(text)
    result = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "error:" not in result.stderr + result.stdout


def test_nginx_example_overwrites_x_forwarded_for_and_proxies_to_the_mirror() -> None:
    text = (CONTRIB / "nginx" / "pypimirror.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    assert f"server 127.0.0.1:{load_config(DOCKER_CONFIG).listen_address[1]};" in text
    assert "proxy_buffering off;" in text


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_example_passes_nginx_t(tmp_path: Path) -> None:
    temp_paths = " ".join(f"{kind}_temp_path {tmp_path}/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body; {temp_paths}\n"
        f"  include {CONTRIB / 'nginx' / 'pypimirror.conf'};\n}}\n"
    )
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# -- every file -------------------------------------------------------------------------------------


def test_contrib_names_no_host_but_example_org_and_loopback() -> None:
    hosts = set()
    for path in CONTRIB.rglob("*"):
        if path.is_file():
            hosts.update(re.findall(r"\b(?:[a-z0-9-]+\.)+(?:org|com|net|io|dev)\b", path.read_text()))
    assert hosts and all(host == "example.org" or host.endswith(".example.org") for host in hosts), hosts


# -- the Grafana dashboard --------------------------------------------------------------------------

DASHBOARD = CONTRIB / "grafana" / "pypimirror-dashboard.json"
METRIC_NAME = re.compile(r"\bpypimirror_[a-z0-9_]+\b")


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            queries.append(variable["query"]["query"])
    return queries


def test_dashboard_panels_each_query_our_metrics_and_cover_what_an_operator_watches() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "pypimirror"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels and len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["title"] and panel["targets"], panel["title"]
        assert all(METRIC_NAME.search(target["expr"]) for target in panel["targets"]), panel["title"]
    named = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    assert {
        "pypimirror_file_requests_total", "pypimirror_file_bytes_total",  # hit rate, bytes by source
        "pypimirror_cache_tier_bytes", "pypimirror_cache_tier_limit_bytes",  # tier fill
        "pypimirror_vote_queue_depth", "pypimirror_votes_dropped_total",  # vote queue and drops
        "pypimirror_job_last_duration_seconds", "pypimirror_job_failures_since_success",  # jobs
    } <= named


def test_every_metric_the_dashboard_names_is_in_a_running_mirrors_metrics(fake_index: FakeIndex,
                                                                          tmp_path: Path) -> None:
    fake_index.add_project("demo", ["1.0"])
    config = write_config(tmp_path, fake_index)
    sync_once(config)  # job history and tier figures come from the database
    wheel = next(dist for dist in fake_index.files("demo") if dist.filename.endswith(".whl"))
    with running_server(config, tmp_path / "serve.err") as (process, port):
        assert request(port, "/pypi/simple/demo/")[0] == 200
        assert request(port, "/pypi" + wheel.path)[0] == 302
        status, _, body = request(port, "/metrics")
        stop_server(process, tmp_path / "serve.err")
    assert status == 200
    # Sample names carry the suffixes Prometheus stores (_total, _bucket, _sum, _count): a query must use those.
    exported = {sample.name for family in text_string_to_metric_families(body.decode()) for sample in family.samples}
    named = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    assert named - exported == set()
