"""The Dockerfile, compose.yaml, .env.example and the Procfile: what a schema or hadolint cannot see
(`make lint` runs those). No container engine runs here, so these read the files and check each fact
against the code it names: the console script, the port, the commands, the variables, the packages."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from setuptools import find_namespace_packages

from bot.config import Settings
from bot.config.settings import load_settings
from local.slack import FakeSlack
from storage.db import Database
from storage.tables import ProcessRow
from tests.helpers import ROOT, SIGNING_SECRET, Running, handrail_env, run_handrail
from tests.servers import Process, free_port

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
# What the image's own ENV sets for the Python runtime and the shell, not for Handrail.
RUNTIME_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


def instructions(stage: str | None = None) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined; `stage`:
    only those of the stage `FROM ... AS stage` (None: the final stage)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[tuple[str | None, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            named = re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)
            stages.append((named.group(1) if named else None, []))
        stages[-1][1].append((keyword.upper(), rest.strip()))
    return next(found for name, found in (stages if stage else reversed(stages)) if name == stage)


def one(keyword: str, stage: str | None = None) -> str:
    found = [rest for name, rest in instructions(stage) if name == keyword]
    assert len(found) == 1, f"the Dockerfile's final stage has {len(found)} {keyword} instructions"
    return found[0]


def image_env() -> dict[str, str]:
    """The final stage's ENV, in the KEY=value form."""
    env: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            env |= dict(item.split("=", 1) for item in shlex.split(rest))
    return env


def handrail_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the Handrail image (the ones built from this Dockerfile)."""
    return {name: service for name, service in COMPOSE["services"].items() if "build" in service}


def interpolated(value: str, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?message} with `variables` as the .env file."""

    def one_variable(match: re.Match[str]) -> str:
        name, form, word = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        assert form != ":?", f"compose needs {name}: {word}"
        return word if form == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one_variable, value)


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {kind: shlex.split(command) for kind, _, command in (line.partition(": ") for line in lines if line)}


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


SETTINGS_VARIABLES = {name.upper() for name in Settings.model_fields}


# --- the image ----------------------------------------------------------------------------------------


def test_the_image_starts_the_console_script_pyproject_declares_and_serves_web_by_default() -> None:
    assert PYPROJECT["project"]["scripts"]["handrail"] == "bot.cli:main"
    assert json.loads(one("ENTRYPOINT")) == ["handrail"]
    assert json.loads(one("CMD")) == ["web"]
    assert procfile()["web"] == ["handrail", "web"]


def test_the_image_exposes_the_port_handrail_listens_on() -> None:
    assert image_env()["PORT"] == one("EXPOSE") == str(Settings.model_fields["port"].default)
    assert Settings(_env_file=None, port=image_env()["PORT"]).port == 3000  # type: ignore[call-arg]


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    user = one("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, user
    assert f"--uid {uid}" in next(rest for name, rest in instructions() if name == "RUN" and "useradd" in rest)


def test_the_image_sets_no_variable_handrail_does_not_read() -> None:
    handrail = set(image_env()) - RUNTIME_VARIABLES
    assert handrail <= SETTINGS_VARIABLES, handrail - SETTINGS_VARIABLES
    # The config is mounted where compose mounts it, not copied into the image.
    mounts = [volume.rsplit(":", 2) for volume in COMPOSE["x-handrail"]["volumes"]]
    assert [(target, mode) for _source, target, mode in mounts] == [(image_env()["HANDRAIL_CONFIG"], "ro")]
    assert not any(name == "COPY" and ".yml" in rest for name, rest in instructions())


def test_the_builder_copies_every_package_pyproject_installs_and_not_the_client() -> None:
    """A package setuptools would find that the builder does not copy would be missing from the
    image (or fail its build); the client is installed apart, by the agents."""
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {source for name, rest in instructions("builder") if name == "COPY" for source in rest.split()[:-1]}
    top_level = {package.partition(".")[0] for package in find_namespace_packages(where=str(ROOT), include=include)}
    assert top_level == {"bot", "handlers", "storage", "local"}
    assert top_level <= copied
    assert "client" not in copied and "tests" not in copied
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied


def test_the_installed_package_holds_every_file_the_server_reads() -> None:
    """The image installs the package (no source tree): each file under the packages is a module
    of a package setuptools finds or matches the package data, so templates, static files and
    migrations are all in the image."""
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = set(find_namespace_packages(where=str(ROOT), include=include))
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    tracked = subprocess.run(
        ["git", "ls-files", "bot", "handlers", "storage", "local"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked
    left_out = []
    for name in tracked:
        path = Path(name)
        package = ".".join(path.parent.parts)
        if path.suffix == ".py" and package in packages:
            continue
        top, inner = path.parts[0], "/".join(path.parts[1:])
        if any(fnmatch.fnmatch(inner, pattern) for pattern in package_data.get(top, [])):
            continue
        left_out.append(name)
    # Alembic's template for writing a new migration: a developer's tool, not read by the server.
    assert left_out == ["storage/migrations/script.py.mako"]


@pytest.mark.parametrize("shared", ["in-process"], indirect=True)
def test_the_healthcheck_passes_against_a_running_server_and_fails_without_one(running: Running) -> None:
    """The HEALTHCHECK's command as Docker runs it (exec form, no shell, PORT from the image's ENV)."""
    check = one("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :])
    assert command[0] == "python"
    port = running.url.rsplit(":", 1)[1]
    up = subprocess.run([sys.executable, *command[1:]], env=handrail_env(PORT=port), capture_output=True, timeout=30)
    assert up.returncode == 0, up.stderr
    down = subprocess.run(
        [sys.executable, *command[1:]], env=handrail_env(PORT=str(free_port())), capture_output=True, timeout=30
    )
    assert down.returncode != 0


def test_the_worker_stops_cleanly_on_sigterm(tmp_path: Path, config_file: Path, slack: FakeSlack) -> None:
    """`docker stop` (and a platform scaling down) sends SIGTERM to the container's process 1, which
    without a handler of its own ignores it until the engine's SIGKILL 10 s later. The worker ends
    as it does on Ctrl-C instead: exit code 0, and its heartbeat row removed at once."""
    database_url = f"sqlite:///{tmp_path / 'handrail.db'}"
    env = handrail_env(
        HANDRAIL_CONFIG=str(config_file),
        DATABASE_URL=database_url,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.base_url,
        HANDRAIL_LOG_FORMAT="text",
    )
    worker = Process("worker", env, cwd=tmp_path)
    try:
        worker.wait_for("worker: sweeping every 5s")
        db = Database(database_url)
        with db.transaction() as session:
            assert session.query(ProcessRow).count() == 1
    finally:
        log = worker.stop()
    assert worker.process.returncode == 0, log
    assert "worker: stopping" in log and "Traceback" not in log
    with db.transaction() as session:
        assert session.query(ProcessRow).count() == 0
    db.dispose()


# --- compose -----------------------------------------------------------------------------------------


def test_compose_runs_the_procfiles_processes_with_the_same_commands(tmp_path: Path) -> None:
    """release, web and worker: the Procfile's lines, each a real `handrail` subcommand."""
    services = handrail_services()
    assert set(services) == set(procfile())
    for name, service in services.items():
        assert ["handrail", *service["command"]] == procfile()[name]
        helped = run_handrail(*service["command"], "--help", cwd=tmp_path)
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith(f"usage: handrail {service['command'][0]}")


def test_compose_starts_web_and_worker_after_the_migration_and_keeps_sweeps_in_the_worker() -> None:
    services = COMPOSE["services"]
    assert services["release"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["release"]["restart"] == "no"
    for name in ("web", "worker"):
        assert services[name]["depends_on"] == {
            "release": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    assert services["web"]["deploy"]["replicas"] == 2
    # No fixed host port: two replicas on one host would both want it.
    assert all(":" not in str(port) for port in services["web"]["ports"])
    assert services["web"]["environment"]["HANDRAIL_SCHEDULER"] == "off"
    assert "HANDRAIL_SCHEDULER" not in services["worker"]["environment"]
    # The worker serves no HTTP, so the image's /healthz check would mark it unhealthy.
    assert services["worker"]["healthcheck"] == {"disable": True}


def test_every_variable_compose_and_env_example_set_is_one_handrail_or_compose_reads() -> None:
    """Handrail's own (bot/config/settings.py), or one compose itself fills in (`${NAME}`)."""
    compose_text = (ROOT / "compose.yaml").read_text()
    interpolated_names = set(re.findall(r"\$\{(\w+)", compose_text))
    for name, service in handrail_services().items():
        unknown = set(service["environment"]) - SETTINGS_VARIABLES
        assert not unknown, f"{name} sets {unknown}, which Handrail does not read"
    unknown = set(env_example()) - SETTINGS_VARIABLES - interpolated_names
    assert not unknown, f".env.example has {unknown}, which neither Handrail nor compose.yaml reads"
    # Every secret Settings holds can be given through .env.
    secrets = {name.upper() for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
    assert secrets <= set(env_example())


def test_each_services_environment_is_one_handrail_accepts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Interpolated as compose would, with a .env filled in, each service's variables load without
    a problem (e.g. HANDRAIL_SCHEDULER: off written unquoted would reach Handrail as False)."""
    dotenv = env_example() | {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "POSTGRES_PASSWORD": "pw"}
    loaded = {}
    for name, service in handrail_services().items():
        assert all(isinstance(value, str) for value in service["environment"].values()), name
        environment = {key: interpolated(value, dotenv) for key, value in service["environment"].items()}
        with monkeypatch.context() as patch:
            patch.chdir(tmp_path)
            for key, value in (dotenv | environment).items():
                patch.setenv(key, value)
            loaded[name] = load_settings(env_file=None)
    for settings in loaded.values():
        assert settings.database_url == "postgresql://handrail:pw@postgres:5432/handrail"
        assert settings.redis_url == "redis://redis:6379/0"  # required: several processes share the database
        assert str(settings.handrail_config) == image_env()["HANDRAIL_CONFIG"]
    assert not loaded["web"].handrail_scheduler
    assert loaded["worker"].handrail_scheduler


def test_compose_refuses_to_start_without_the_database_password() -> None:
    """`${POSTGRES_PASSWORD:?...}`: an unset or empty password stops compose, naming the variable."""
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        interpolated(COMPOSE["x-handrail-env"]["DATABASE_URL"], {})


def test_the_secrets_stay_out_of_git_and_out_of_the_build_context() -> None:
    """.env (the secrets) and handrail.yml (a PagerDuty routing key, maybe) are neither committed nor
    sent to the image's builder; .env.example is committed."""
    ignored = subprocess.run(["git", "check-ignore", ".env", ".env.example"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == [".env"]
    assert os.path.basename(COMPOSE["x-handrail"]["env_file"]) == ".env"
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".env", ".env.*", "handrail.yml", ".git"} <= set(dockerignore)
