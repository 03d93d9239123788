"""`handrail web` without Slack credentials: local mode, as a newcomer meets it (local/mode.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import yaml

from local.demo import DEMO_TOKENS
from tests.helpers import handrail_env, run_handrail
from tests.servers import Process, free_port
from tests.test_cli import real_config


def serve_local(cwd: Path, *args: str, **variables: str) -> tuple[Process, str]:
    port = free_port()
    process = Process("web", handrail_env(PORT=str(port), **variables), *args, cwd=cwd)
    process.wait_for(f"open http://localhost:{port}/local", timeout=60)
    process.wait_for("Application startup complete")
    return process, f"http://127.0.0.1:{port}"


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def test_without_a_config_it_serves_the_demo_and_writes_only_its_state_folder(tmp_path: Path) -> None:
    process, url = serve_local(tmp_path)
    try:
        page = httpx.get(f"{url}/local", timeout=10)
        assert page.status_code == 200 and "Priya Shah" in page.text  # the first approver of the first agent
        gate = httpx.get(
            f"{url}/v1/agents/lead-router/gate",
            headers={"Authorization": f"Bearer {DEMO_TOKENS['lead-router']}"},
            timeout=10,
        )
        assert gate.json()["allowed"] is True
        assert httpx.get(f"{url}/readyz", timeout=10).json() == {"ready": True, "database": "ok"}
    finally:
        log = process.stop()
    assert {path.split("/")[0] for path in files_under(tmp_path)} == {".handrail-local"}, files_under(tmp_path)
    assert (tmp_path / ".handrail-local" / ".gitignore").read_text() == "*\n"
    assert "xoxb-local" not in log and "Traceback" not in log


def test_with_a_config_file_it_serves_that_config_with_ids_as_names(tmp_path: Path) -> None:
    (tmp_path / "handrail.yml").write_text(yaml.safe_dump(real_config()))
    process, url = serve_local(tmp_path)
    try:
        page = httpx.get(f"{url}/local", timeout=10).text
        own = httpx.get(
            f"{url}/v1/agents/lead-router/gate",
            headers={"Authorization": "Bearer a real token"},
            timeout=10,
        )
        demo = httpx.get(
            f"{url}/v1/agents/lead-router/gate",
            headers={"Authorization": f"Bearer {DEMO_TOKENS['lead-router']}"},
            timeout=10,
        )
    finally:
        process.stop()
    assert hashlib.sha256(b"a real token").hexdigest() == real_config()["agents"]["lead-router"]["token_sha256"]
    assert own.status_code == 200 and demo.status_code == 401
    assert "Priya Shah" not in page
    assert not (tmp_path / ".handrail-local" / "demo.yml").exists()


def test_it_listens_beyond_loopback_only_when_told_to(tmp_path: Path) -> None:
    refused = run_handrail("web", "--host", "0.0.0.0", cwd=tmp_path, PORT=str(free_port()))
    assert refused.returncode == 2
    assert refused.stderr.startswith("handrail: local mode listens on 127.0.0.1 only: its page acts as any user")
    assert "--expose" in refused.stderr
    assert not (tmp_path / ".handrail-local").exists(), "it wrote its state before refusing"
    process, _ = serve_local(tmp_path, "--host", "0.0.0.0", "--expose")
    process.stop()
