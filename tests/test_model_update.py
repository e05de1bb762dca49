"""Checking a model file before it is served, and swapping it in (classifier/model_update.py).

The swap under real load, with gunicorn's reload, is in tests/test_model_swap.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from classifier.errors import ModelContractError
from classifier.model_update import check_model_file, gunicorn_master_pid, install_model

from testing import ROOT
from testing.samples import TINY_LABELS


def test_check_accepts_a_good_file_and_classifies_the_smoke_image(tiny_model_path):
    classifier = check_model_file(tiny_model_path)
    assert classifier.model.version == "0.0.1"
    smoke = classifier.smoke_test()
    assert smoke.top[0][0] in TINY_LABELS
    assert sum(score for _, score in smoke.top) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    "fixture, reason",
    [
        ("corrupt_model_path", "not a TorchScript file"),
        ("wrong_contract_model_path", r"expected \(N, 2\) for 2 labels"),
    ],
)
def test_check_refuses_a_broken_file_with_the_reason(request, fixture, reason):
    with pytest.raises(ModelContractError, match=reason):
        check_model_file(request.getfixturevalue(fixture))


def test_check_refuses_a_missing_file(tmp_path):
    with pytest.raises(ModelContractError, match="not found"):
        check_model_file(tmp_path / "nope.zip")


def test_install_replaces_the_served_file_with_the_checked_one(tmp_path, tiny_model_path, tiny_model_v2_path):
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_path, served)
    model = install_model(tiny_model_v2_path, served).model
    assert model.version == "0.0.2" and model.path == str(served)
    assert served.read_bytes() == tiny_model_v2_path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]  # no staged copy left


@pytest.mark.parametrize("fixture", ["corrupt_model_path", "wrong_contract_model_path"])
def test_install_of_a_broken_file_leaves_the_served_file_alone(request, tmp_path, tiny_model_path, fixture):
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_path, served)
    with pytest.raises(ModelContractError):
        install_model(request.getfixturevalue(fixture), served)
    assert served.read_bytes() == tiny_model_path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


def test_install_creates_the_served_file_if_there_is_none(tmp_path, tiny_model_path):
    served = tmp_path / "model.zip"
    install_model(tiny_model_path, served)
    assert served.read_bytes() == tiny_model_path.read_bytes()


@pytest.fixture
def gunicorn_stand_in(tmp_path):
    """A process whose command line says gunicorn and that notes the SIGHUP it receives."""
    marker = tmp_path / "hup"
    code = (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGHUP, lambda *_: pathlib.Path({str(marker)!r}).write_text('hup'))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, "gunicorn-stand-in"], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"ready\n"
    yield process, marker
    process.kill()
    process.wait()


def wait_for(path: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()


def test_master_pid_from_a_pid_or_a_pid_file(gunicorn_stand_in, tmp_path):
    process, _ = gunicorn_stand_in
    pidfile = tmp_path / "gunicorn.pid"
    pidfile.write_text(f"{process.pid}\n")
    assert gunicorn_master_pid(pid=process.pid) == process.pid
    assert gunicorn_master_pid(pidfile=pidfile) == process.pid


def test_master_pid_refuses_a_process_that_is_not_gunicorn(tmp_path):
    with pytest.raises(LookupError, match="not gunicorn"):
        gunicorn_master_pid(pid=os.getpid())
    with pytest.raises(LookupError, match="Cannot read"):
        gunicorn_master_pid(pidfile=tmp_path / "missing.pid")
    with pytest.raises(ValueError):
        gunicorn_master_pid()


def swap_app(app, served):
    app.config["MODEL_PATH"] = str(served)
    return app.test_cli_runner()


def test_check_model_command(runner, tiny_model_path, corrupt_model_path):
    ok = runner.invoke(args=["check-model", str(tiny_model_path)])
    assert ok.exit_code == 0, ok.output
    assert "ok:" in ok.output and "tiny-colours 0.0.1" in ok.output and "3 classes" in ok.output
    refused = runner.invoke(args=["check-model", str(corrupt_model_path)])
    assert refused.exit_code == 1
    assert "refused" in refused.output and "not a TorchScript file" in refused.output


def test_swap_model_command_installs_then_signals_gunicorn(app, tmp_path, tiny_model_path, tiny_model_v2_path, gunicorn_stand_in):
    process, hup = gunicorn_stand_in
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_path, served)
    result = swap_app(app, served).invoke(args=["swap-model", str(tiny_model_v2_path), "--pid", str(process.pid)])
    assert result.exit_code == 0, result.output
    assert "0.0.2" in result.output
    assert served.read_bytes() == tiny_model_v2_path.read_bytes()
    assert wait_for(hup), "gunicorn was not sent SIGHUP"


@pytest.mark.parametrize("fixture", ["corrupt_model_path", "wrong_contract_model_path"])
def test_swap_model_command_refuses_a_broken_file_and_sends_nothing(request, app, tmp_path, tiny_model_path, gunicorn_stand_in, fixture):
    process, hup = gunicorn_stand_in
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_path, served)
    result = swap_app(app, served).invoke(args=["swap-model", str(request.getfixturevalue(fixture)), "--pid", str(process.pid)])
    assert result.exit_code == 1
    assert "refused" in result.output and "unchanged" in result.output
    assert served.read_bytes() == tiny_model_path.read_bytes()
    time.sleep(0.2)
    assert not hup.exists() and process.poll() is None


def test_swap_model_command_needs_gunicorn_before_it_touches_the_file(app, tmp_path, tiny_model_path, tiny_model_v2_path):
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_path, served)
    result = swap_app(app, served).invoke(args=["swap-model", str(tiny_model_v2_path), "--pid", str(os.getpid())])
    assert result.exit_code == 1 and "not gunicorn" in result.output
    assert served.read_bytes() == tiny_model_path.read_bytes()


def test_the_flask_command_works_while_the_served_file_is_broken(tiny_model_path, corrupt_model_path):
    """`flask --app app check-model` must not load MODEL_PATH: fixing a broken one is its use."""
    environment = {**os.environ, "MODEL_PATH": str(corrupt_model_path)}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    ok = subprocess.run([*flask, "check-model", str(tiny_model_path)], cwd=ROOT, env=environment, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "ok:" in ok.stdout
    refused = subprocess.run([*flask, "check-model", str(corrupt_model_path)], cwd=ROOT, env=environment, capture_output=True, text=True)
    assert refused.returncode == 1 and "refused" in refused.stderr


def test_an_app_built_for_the_command_line_loads_the_model_on_its_first_request(tiny_model_path):
    # What `flask --app app run` gets: commands start without the model, a request loads it.
    from app import create_app

    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "LOAD_MODEL": False, "LOAD_MODEL_ON_FIRST_REQUEST": True})
    assert "classifier" not in app.extensions
    assert app.test_client().get("/health").get_json()["version"] == "0.0.1"
    assert "classifier" in app.extensions
