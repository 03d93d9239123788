"""bench/run, which runs the benchmarks and prints their figures as one JSON object. The benchmarks'
figures themselves are measured by running them (README, "Benchmarks"), not by tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def bench_run(*args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run"), *args], cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    return done.returncode, json.loads(done.stdout), done.stderr


def test_a_quick_run_prints_the_bench_figures_in_one_json_object() -> None:
    code, output, stderr = bench_run("--only", "statements", "--quick", "--python", sys.executable)

    assert code == 0, stderr[-3000:]
    assert output["failed"] == []
    assert output["machine"]["cores"] == os.cpu_count()
    assert output["machine"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert output["started_at"] <= output["finished_at"]
    # statements' own figures, with --skip-postgres (its quick flag) and --json (no table after them)
    assert set(output["statements"]["now"]) == {"sqlite"}
    assert output["statements"]["now"]["sqlite"]
    assert set(output["seconds"]) == {"statements"}


def test_a_bench_that_fails_is_recorded_with_its_error_and_the_others_still_run(tmp_path: Path) -> None:
    """The benches run under a stand-in interpreter: gate fails after printing text, client prints
    the arguments it was given as its figures."""
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  */gate.py) echo "half a table"\n'
        '    printf "Traceback (most recent call last):\\n  File x\\nRuntimeError: gate broke\\n" >&2; exit 3;;\n'
        '  *) printf \'{"args": "%s"}\\n\' "$*";;\n'
        "esac\n"
    )
    python.chmod(0o755)

    code, output, _ = bench_run("--only", "gate,client", "--quick", "--python", str(python))

    assert code == 1
    assert output["failed"] == ["gate"]
    assert output["gate"] == {
        "error": "exited with 3",
        "raised": "RuntimeError: gate broke",
        "stderr_tail": "Traceback (most recent call last):\n  File x\nRuntimeError: gate broke\n",
        "stdout_tail": "half a table\n",
    }
    # client prints only JSON (no --json flag); its quick flags are its own
    assert output["client"] == {"args": f"{ROOT / 'bench' / 'client.py'} --calls 200 --phases 1"}
    assert set(output["seconds"]) == {"gate", "client"}


def test_a_bench_that_does_not_exist_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run"), "--only", "loadgen"], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    assert "no such bench: loadgen" in done.stderr
