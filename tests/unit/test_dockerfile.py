"""gateway/Dockerfile and .dockerignore, read as text: what the image promises (non-root, exec-form command,
health check) and what the build context holds. No Docker needed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "gateway" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    pairs = []
    for entry in logical:
        instruction, _, arguments = entry.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def test_slim_python_312_base(instructions: list[tuple[str, str]]) -> None:
    assert ("ARG", "PYTHON_IMAGE=python:3.12-slim") in instructions
    assert [args for name, args in instructions if name == "FROM"] == [
        "${PYTHON_IMAGE} AS build",
        "${PYTHON_IMAGE}",
    ]


def test_runs_as_numeric_non_root_user(instructions: list[tuple[str, str]]) -> None:
    users = [args for name, args in _final_stage(instructions) if name == "USER"]
    assert users == ["10001:10001"]
    useradd = " ".join(args for name, args in _final_stage(instructions) if name == "RUN")
    assert "--uid 10001" in useradd and "--gid 10001" in useradd


def test_exec_form_command(instructions: list[tuple[str, str]]) -> None:
    (cmd,) = [args for name, args in _final_stage(instructions) if name == "CMD"]
    assert json.loads(cmd) == ["skypacs", "gateway"]


def test_healthcheck_is_a_c_echo(instructions: list[tuple[str, str]]) -> None:
    (healthcheck,) = [args for name, args in _final_stage(instructions) if name == "HEALTHCHECK"]
    options, _, command = healthcheck.partition(" CMD ")
    assert dict(o.removeprefix("--").split("=") for o in shlex.split(options)) == {
        "interval": "30s",
        "timeout": "10s",
        "start-period": "20s",
        "retries": "3",
    }
    assert json.loads(command) == ["python", "-m", "skypacs.dimse.healthcheck"]


def test_healthcheck_and_command_match_the_task_definition(instructions: list[tuple[str, str]]) -> None:
    from infra.constructs import gateway

    final = _final_stage(instructions)
    (healthcheck,) = [args for name, args in final if name == "HEALTHCHECK"]
    (cmd,) = [args for name, args in final if name == "CMD"]
    assert json.loads(healthcheck.partition(" CMD ")[2]) == list(gateway.HEALTHCHECK_COMMAND)
    assert json.loads(cmd) == list(gateway.GATEWAY_COMMAND)
    seconds = {m.group(1): int(m.group(2)) for m in re.finditer(r"--([a-z-]+)=(\d+)s", healthcheck)}
    assert seconds == {
        "interval": gateway.HEALTHCHECK_INTERVAL.to_seconds(),
        "timeout": gateway.HEALTHCHECK_TIMEOUT.to_seconds(),
        "start-period": gateway.HEALTHCHECK_START_PERIOD.to_seconds(),
    }
    assert f"--retries={gateway.HEALTHCHECK_RETRIES}" in healthcheck
    assert [args for name, args in final if name == "USER"] == [gateway.CONTAINER_USER]


def test_exposes_dimse_and_http_ports(instructions: list[tuple[str, str]]) -> None:
    (exposed,) = [args for name, args in _final_stage(instructions) if name == "EXPOSE"]
    assert set(exposed.split()) == {"11112", "8080"}


def test_runtime_stage_copies_the_virtual_environment_only(instructions: list[tuple[str, str]]) -> None:
    copies = [args for name, args in _final_stage(instructions) if name == "COPY"]
    assert copies == ["--from=build /opt/skypacs /opt/skypacs"]


def test_dockerignore_is_an_allow_list_of_what_pip_install_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "README.md", "skypacs", "gateway/Dockerfile"} <= allowed
    # pyproject's readme must be in the context, or the build of the wheel fails.
    assert 'readme = "README.md"' in (REPO_ROOT / "pyproject.toml").read_text()
    assert not allowed & {"tests", "infra", "functions", "bench", ".git", "cdk.out"}
