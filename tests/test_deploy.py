"""Git-push deploy, for real: push this repo to a local platform and use what it serves.

``deploy/paas.py`` is the platform: a bare repository whose post-receive hook builds a
release from the pushed commit (a fresh virtualenv from requirements.txt on the Python of
runtime.txt, then bin/post_compile), measures the slug, starts the Procfile's web process
with PORT on loopback, waits for /health, switches its router (the app's one address) to it
and stops the previous release as a dyno is stopped. The tests push HEAD (what `git push
heroku main` sends), so uncommitted changes are not deployed, just as on a platform.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.export import export_model
from classifier.pipeline import Classifier

from testing import ROOT
from testing.load import Load, send, wait_until
from testing.multipart import form_body, post_files
from testing.samples import TINY_LABELS, colour_network, image_bytes
from testing.servers import child_pids, command_line

PAAS = ROOT / "deploy" / "paas.py"
REPORT = ROOT / "test-results" / "deploy-report.json"
MEGABYTE = 1024 * 1024
SLUG_LIMIT_MB = 500


def load_paas():
    spec = importlib.util.spec_from_file_location("paas", PAAS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


paas = load_paas()


def git(*args, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    command = ["git", "-c", "user.name=deploy test", "-c", "user.email=deploy-test@localhost",
               "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True, **kwargs)


def paas_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PAAS), *map(str, args)], capture_output=True, text=True, check=True)


def clone_head(target: Path) -> Path:
    """A working copy of this repo's HEAD commit on a branch named main."""
    target.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=target)
    git("fetch", "--quiet", str(ROOT), "HEAD", cwd=target)
    git("checkout", "--quiet", "-B", "main", "FETCH_HEAD", cwd=target)
    return target


def commit_all(source: Path, message: str) -> str:
    git("add", "--all", cwd=source)
    git("commit", "--quiet", "-m", message, cwd=source)
    return git("rev-parse", "HEAD", cwd=source).stdout.strip()


def push(source: Path, platform_root: Path, ref: str = "main") -> str:
    """`git push` to the platform; returns what the pusher sees (the build log)."""
    result = subprocess.run(
        ["git", "push", str(platform_root / "app.git"), f"HEAD:{ref}"],
        cwd=source, capture_output=True, text=True, timeout=1200,
        env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    )
    return result.stdout + result.stderr


def current_release(platform_root: Path) -> dict | None:
    path = platform_root / "current.json"
    return json.loads(path.read_text()) if path.exists() else None


def alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def platform_root(tmp_path):
    root = tmp_path / "paas"
    paas_cli("init", root)
    yield root
    paas_cli("stop", root)


# ---------------------------------------------------------------------------------------
# Refusals that a platform makes before it spends minutes on a build

def test_a_push_whose_python_files_disagree_is_refused_with_the_reason(tmp_path, platform_root):
    source = clone_head(tmp_path / "src")
    runtime = (source / "runtime.txt").read_text().strip().removeprefix("python-")
    (source / ".python-version").write_text("3.0.0\n")
    commit_all(source, "disagreeing Python versions")
    log = push(source, platform_root)
    assert f"runtime.txt says Python {runtime} but .python-version says 3.0.0" in log
    assert "Deploy failed" in log and current_release(platform_root) is None
    assert not (platform_root / "releases" / "v1").exists()


def test_a_python_that_is_not_installed_fails_the_build_with_what_to_do(tmp_path, platform_root):
    source = clone_head(tmp_path / "src")
    (source / "runtime.txt").write_text("python-3.99.0\n")
    (source / ".python-version").write_text("3.99.0\n")
    commit_all(source, "a Python nobody has")
    log = push(source, platform_root)
    assert "Python 3.99.0 (from runtime.txt) is not installed" in log
    assert "pyenv install 3.99.0" in log
    assert current_release(platform_root) is None


def test_only_the_main_branch_deploys(tmp_path, platform_root):
    source = clone_head(tmp_path / "src")
    log = push(source, platform_root, ref="feature")
    assert "only main (or master) deploys" in log
    assert current_release(platform_root) is None
    assert not list((platform_root / "releases").iterdir())


def test_slugignore_keeps_what_serving_needs_and_leaves_out_the_rest():
    tracked = git("ls-files", cwd=ROOT).stdout.split()
    # Files the other parts of the project add, whether or not they are in this commit yet.
    expected_later = ["model.zip", "static/app.js", "templates/index.html", "train_notebook.ipynb",
                      "bench/latency.py", "bench/results.md", "docs/confusion.png", "runs/ucmerced.ipynb"]
    paths = sorted(set(tracked + expected_later))
    ignored = set(paas.slugignored(paths, (ROOT / ".slugignore").read_text()))
    kept = set(paths) - ignored
    needed = {"app.py", "Procfile", "gunicorn.conf.py", "requirements.txt", "runtime.txt", "app.json",
              "model.zip", "static/app.js", "templates/index.html"}
    assert needed <= kept
    assert {path for path in tracked if path.startswith(("web/", "classifier/"))} <= kept
    assert {"train_notebook.ipynb", "bench/latency.py", "docs/confusion.png", "runs/ucmerced.ipynb"} <= ignored
    assert {path for path in tracked if path.startswith(("tests/", ".ci/", "deploy/"))} <= ignored


# ---------------------------------------------------------------------------------------
# The whole thing: build, boot, serve; then a new model by another push

@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """HEAD pushed to a fresh platform; a stand-in model is committed if HEAD has none."""
    workdir = tmp_path_factory.mktemp("deploy")
    source = clone_head(workdir / "src")
    if not (source / "model.zip").exists():
        export_model(colour_network(), TINY_LABELS, {"name": "tiny-colours", "version": "1.0.0"},
                     source / "model.zip", mean=(0, 0, 0), std=(1, 1, 1))
        commit_all(source, "A stand-in model: this commit has no model.zip yet")
    root = workdir / "paas"
    paas_cli("init", root)
    try:
        log = push(source, root)
        yield root, source, log
    finally:
        paas_cli("stop", root)
        records = [json.loads(p.read_text()) for p in (root / "releases").glob("v*.json")]
        assert not [r["release"] for r in records if r.get("pid") and alive(r["pid"])], "left running"


def save_report(name: str, record: dict) -> None:
    keys = ("release", "python", "build_seconds", "slug_bytes", "slug_gzip_bytes", "boot_seconds", "deploy_seconds")
    save_figures(name, {key: record.get(key) for key in keys})


def save_figures(name: str, figures: dict) -> None:
    """The test's figures, for docs/deploy.md: test-results/deploy-report.json."""
    REPORT.parent.mkdir(exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[name] = figures
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{name}: {figures}")


@pytest.mark.deploy
def test_a_push_builds_a_slug_within_the_limit_and_serves_predictions(deployed, dataset_jpeg):
    root, source, log = deployed
    release = current_release(root)
    assert release is not None, log
    save_report("first_push", release)
    head = git("rev-parse", "HEAD", cwd=source).stdout.strip()
    assert release["release"] == "v1" and release["commit"] == head
    assert release["python"] == (source / "runtime.txt").read_text().strip().removeprefix("python-")
    assert f"Released v1 at {release['app_url']}" in log
    # bin/post_compile ran, as Heroku's Python buildpack runs it: nginx there ignores SIGTERM.
    assert "Running bin/post_compile" in log
    assert (root / "releases" / "v1" / "front" / "nginx_ignores_sigterm.so").exists()
    # The slug holds the fresh virtualenv with torch, measured as the platform limits it.
    assert 0 < release["slug_gzip_bytes"] < release["slug_bytes"]
    assert release["slug_gzip_bytes"] <= SLUG_LIMIT_MB * MEGABYTE
    assert (root / "releases" / "v1" / ".venv" / "bin" / "gunicorn").exists()
    assert not (root / "releases" / "v1" / "tests").exists()  # .slugignore applied
    # The release runs the front: nginx on PORT in front of gunicorn, and nginx answers.
    processes = [command_line(pid) for pid in child_pids(release["pid"])]
    assert any(line.startswith("nginx: master") for line in processes), processes
    assert any("gunicorn" in line for line in processes), processes
    head = subprocess.run(["curl", "-sS", "-I", f"{release['url']}/static/app.css"],
                          capture_output=True, text=True, check=True).stdout.lower()
    assert head.startswith("http/1.1 200") and "server: nginx" in head and "cache-control: no-cache" in head, head

    # The app's address is the platform's router, in front of the release.
    answer = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-F", f"file=@{dataset_jpeg}", f"{release['app_url']}/predict"],
        capture_output=True, text=True, check=True,
    )
    served = json.loads(answer.stdout)
    classifier = Classifier.setup(source / "model.zip", threads=1)
    top_k = classifier.parse_top_k(None)  # the server's default for this model
    expected = classifier.classify(dataset_jpeg.read_bytes(), top_k=top_k).to_json()
    assert served["label"] == expected["label"]
    assert served["score"] == pytest.approx(expected["score"], abs=1e-4)


@pytest.mark.deploy
def test_the_dockerfile_healthcheck_command_passes_against_the_release(deployed):
    root, _, log = deployed
    release = current_release(root)
    assert release is not None, log
    healthcheck = docker_healthcheck_command()
    env = {**os.environ, "PORT": str(release["port"])}
    assert subprocess.run(healthcheck, env=env).returncode == 0
    # And it fails where nothing answers, so it can tell a dead container.
    assert subprocess.run(healthcheck, env={**env, "PORT": str(paas.free_port())}, capture_output=True).returncode != 0


def docker_healthcheck_command() -> list[str]:
    """The HEALTHCHECK's exec-form command, with the image's `python` as this one."""
    from dockerfile_parse import DockerfileParser

    for instruction in DockerfileParser(str(ROOT / "Dockerfile")).structure:
        if instruction["instruction"] == "HEALTHCHECK":
            command = json.loads(instruction["value"].split("CMD", 1)[1])
            return [sys.executable if command[0] == "python" else command[0], *command[1:]]
    raise AssertionError("the Dockerfile has no HEALTHCHECK")


def predict_then_ask_the_version(url: str, upload: tuple[bytes, str]):
    """One prediction, then the serving model's version: what a client sees across a release.
    Five a second, within the per-client rate limit (RATE_LIMIT)."""
    time.sleep(0.2)
    status, answer = send(url, "POST", "/predict", upload[0], {"Content-Type": upload[1]})
    if status != 200:
        return "predict", status, answer
    return "health", *send(url, "GET", "/health")


@pytest.mark.deploy
def test_a_second_push_with_a_new_model_serves_it_and_retires_the_old_release(deployed):
    root, source, _ = deployed
    first = current_release(root)
    assert first is not None
    old_version = json.loads(subprocess.run(["curl", "-sS", f"{first['app_url']}/health"],
                                            capture_output=True, text=True, check=True).stdout)["version"]
    export_model(colour_network(), TINY_LABELS, {"name": "tiny-colours", "version": "2.0.0-deploy-test"},
                 source / "model.zip", mean=(0, 0, 0), std=(1, 1, 1))
    head = commit_all(source, "A new model version")
    # A client posts to the app's address all through the push, as users do.
    upload = form_body([("red.png", image_bytes("PNG", colour=(255, 0, 0)))])
    client = Load(lambda _thread, _index: predict_then_ask_the_version(first["app_url"], upload), threads=1)
    with client:
        log = push(source, root)

        def served_by_v2() -> bool:
            return any(isinstance(o.body, dict) and o.body.get("version") == "2.0.0-deploy-test"
                       for o in list(client.outcomes))
        wait_until(served_by_v2, timeout=30, what="the client to be answered by v2")
    second = current_release(root)
    assert second is not None and second["release"] == "v2", log
    save_report("second_push", second)
    assert second["commit"] == head and second["url"] != first["url"]
    assert second["app_url"] == first["app_url"]  # one address for the app, whichever release serves
    # No request failed across the switch, and the client saw v1, then v2, never v1 again.
    failed = [(o.kind, o.status, o.error or o.body) for o in client.outcomes if o.status != 200]
    assert not failed, failed
    versions = [o.body["version"] for o in client.outcomes if o.kind == "health"]
    assert versions[0] == old_version and versions[-1] == "2.0.0-deploy-test", versions
    assert versions == sorted(versions, key=lambda version: version == "2.0.0-deploy-test"), versions
    # The old release was stopped as a dyno is (SIGTERM to every process) and exited by itself.
    retired = json.loads((root / "releases" / "v1.json").read_text())
    save_figures("across_the_second_push", {
        "requests": len(client.outcomes), "failed": len(failed), "answered_by_v1": versions.count(old_version),
        "answered_by_v2": versions.count("2.0.0-deploy-test"), "v1_stopped_by": retired.get("stopped_by"),
        "v1_stop_seconds": retired.get("stop_seconds")})
    assert retired["status"] == "retired" and retired["stopped_by"] == "SIGTERM", retired

    model = json.loads(subprocess.run(["curl", "-sS", "--fail-with-body", f"{second['url']}/model"],
                                      capture_output=True, text=True, check=True).stdout)
    assert model["version"] == "2.0.0-deploy-test" and model["labels"] == TINY_LABELS
    status, body = post_files(f"{second['url']}/predict", [("red.png", image_bytes("PNG", colour=(255, 0, 0)))])
    assert status == 200 and json.loads(body)["label"] == "red"
    # The previous release was stopped once the new one was healthy, and its port is free.
    assert not alive(first["pid"])
    assert subprocess.run(["curl", "-s", f"{first['url']}/health"], capture_output=True).returncode != 0
