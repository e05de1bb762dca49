"""The real Procfile server: no process of it has torch loaded when a verified ONNX copy exists.

Every process of the running server (the front's process, nginx's, gunicorn's master, each
worker: the whole process tree) is looked at in /proc/<pid>/maps, after it has served single and batch
requests. With INFERENCE_ENGINE=torchscript the workers load libtorch, as they must.
Then the issue-14 case: with INFERENCE_ENGINE=onnxruntime, a swap to a model.zip that the
ONNX copy was not made from is refused, and MODEL_PATH and the workers stay as they were.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from training.onnx_variants import export_onnx

from testing import ROOT
from testing.load import send, wait_for_workers, worker_pids
from testing.multipart import form_body
from testing.samples import model_answer
from testing.servers import free_port, procfile_command, procfile_env, procfile_server

pytestmark = pytest.mark.slow


def server_processes(root_pid: int) -> list[psutil.Process]:
    root = psutil.Process(root_pid)
    return [root, *root.children(recursive=True)]


def loads_library(pid: int, name: str) -> bool:
    """Whether a shared library whose file name starts with ``name`` is mapped into ``pid``."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if Path(path).name.startswith(name):
            return True
    return False


def serve_some(url: str, data_dir: Path) -> None:
    images = [sorted((data_dir / "ucmerced" / cls).glob("*.jpg"))[0] for cls in ("airplane", "beach", "river")]
    for image in images:
        status, body = send(url, "POST", "/predict", image.read_bytes(), {"Content-Type": "image/jpeg"})
        assert status == 200 and body["label"] == model_answer(image)["label"], body  # the model's own answer
    batch, content_type = form_body([("upload", image.read_bytes()) for image in images * 5])
    status, body = send(url, "POST", "/predict/batch", batch, {"Content-Type": content_type})
    assert status == 200
    assert [r["label"] for r in body["results"]] == [model_answer(i)["label"] for i in images * 5]


def test_no_process_of_the_server_has_torch_loaded_with_a_verified_copy(data_dir, tmp_path):
    log = tmp_path / "gunicorn.log"
    with procfile_server(log_path=log) as (url, master):
        workers = wait_for_workers(master.pid, 2)
        for _ in range(4):  # requests land on either worker
            serve_some(url, data_dir)
        assert send(url, "GET", "/health")[1]["engine"] == "onnxruntime"
        processes = server_processes(master.process.pid)  # the Procfile's process and all below it
        assert {p.pid for p in processes} >= {master.process.pid, master.nginx_pid, master.pid, *workers}
        with_torch = [p.pid for p in processes if loads_library(p.pid, "libtorch")]
        assert with_torch == [], f"processes with libtorch: {with_torch}"
        assert all(loads_library(pid, "libonnxruntime") for pid in workers)
    assert log.read_text().count("serving with ONNX Runtime: model.onnx answers as model.zip does") == 2


def test_with_torchscript_asked_for_every_worker_loads_torch(data_dir, tmp_path):
    log = tmp_path / "gunicorn.log"
    with procfile_server(env={"INFERENCE_ENGINE": "torchscript"}, log_path=log) as (url, master):
        workers = wait_for_workers(master.pid, 2)
        serve_some(url, data_dir)
        health = send(url, "GET", "/health")[1]
        assert health["engine"] == "torchscript" and health["engine_reason"] == "INFERENCE_ENGINE=torchscript"
        assert all(loads_library(pid, "libtorch") for pid in workers)
        assert not loads_library(master.pid, "libtorch")  # the master never loads the model
    assert log.read_text().count("serving with TorchScript: INFERENCE_ENGINE=torchscript") == 2


def test_onnxruntime_with_a_stale_copy_stops_the_start_with_the_reason(tiny_model_v2_path, tiny_onnx):
    onnx = tiny_onnx  # made from 0.0.1, serving 0.0.2
    command = procfile_command()
    environment = procfile_env(free_port(), {"INFERENCE_ENGINE": "onnxruntime", "MODEL_PATH": str(tiny_model_v2_path),
                                             "ONNX_MODEL_PATH": str(onnx)})
    done = subprocess.run(["sh", "-c", f"exec {command}"], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "ModelContractError: INFERENCE_ENGINE=onnxruntime, but" in done.stderr  # a worker's refusal
    assert "exported from another model" in done.stderr
    assert "Worker failed to boot" in done.stderr  # and gunicorn stops rather than serve without it


def swap_model(path, served: Path, master_pid: int, env: dict) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env, "MODEL_PATH": str(served)}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "swap-model", str(path), "--pid", str(master_pid)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )


def test_swap_model_refuses_a_model_the_copy_was_not_made_from_under_onnxruntime(
    tiny_model_path, tiny_model_v2_path, tmp_path
):
    served = tmp_path / "model.zip"
    shutil.copyfile(tiny_model_path, served)
    env = {"INFERENCE_ENGINE": "onnxruntime", "ONNX_MODEL_PATH": str(export_onnx(served, tmp_path / "model.onnx")),
           "MODEL_PATH": str(served)}
    with procfile_server(env=env, log_path=tmp_path / "gunicorn.log") as (url, master):
        workers = wait_for_workers(master.pid, 2)
        assert send(url, "GET", "/health")[1]["engine"] == "onnxruntime"
        refused = swap_model(tiny_model_v2_path, served, master.pid, env)
        assert refused.returncode == 1, refused.stdout
        assert "refused" in refused.stderr and "unchanged" in refused.stderr
        assert "INFERENCE_ENGINE=onnxruntime, but" in refused.stderr and "another model" in refused.stderr
        assert served.read_bytes() == tiny_model_path.read_bytes()
        assert not list(tmp_path.glob(".model.zip.*"))  # no staged copy left behind
        time.sleep(1)
        assert worker_pids(master.pid) == workers, "a refused file must not reload gunicorn"
        for _ in range(4):
            health = send(url, "GET", "/health")[1]
            assert (health["version"], health["engine"]) == ("0.0.1", "onnxruntime")
        # The same command takes a file the copy was made from (the same model again).
        accepted = swap_model(tiny_model_path, served, master.pid, env)
        assert accepted.returncode == 0, accepted.stderr
        assert "served with onnxruntime" in accepted.stdout
        wait_for_workers(master.pid, 2, exclude=workers)
        assert send(url, "GET", "/health")[1]["engine"] == "onnxruntime"
