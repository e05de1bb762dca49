"""``flask --app app predict --ray``: the batch command on a real Ray cluster of two nodes.

The test starts the cluster on this machine as an operator would (``ray start --head``, then a
second node joining it, one CPU each, with their own token), runs the command against it over
data-set images and an unreadable file, and checks that its output is the single-machine
command's, byte for byte. It stops only the processes it started, by their ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.model import read_meta

from testing import ROOT
from testing.ray_cluster import Cluster, ray_env
from testing.samples import dataset_jpegs
from testing.servers import free_port
COMMAND_TIMEOUT = 240  # seconds: a cluster that hangs fails the test instead of the suite
# Three classes per row, or all of a model with fewer (a user's may have two).
TOP = str(min(3, read_meta(ROOT / "model.zip")["classes"]))
# How Ray names them in each worker's log: decoding fused into the model actors (the
# default), or model actors fed by decode tasks of their own (--ray-decode tasks).
DECODING_MODEL_ACTOR = ":actor_name:MapWorker(MapBatches(_decode_batch)->MapBatches(_ModelActor))"
MODEL_ACTOR = ":actor_name:MapWorker(MapBatches(_ModelActor))"
DECODE_TASK = ":task_name:MapBatches(_decode_batch)"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with Cluster(nodes=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def images(data_dir, tmp_path_factory) -> tuple[Path, list[Path]]:
    """Two images of each class in a folder every node reads, a broken JPEG, and a missing file."""
    folder = tmp_path_factory.mktemp("images")
    for path in dataset_jpegs(data_dir / "ucmerced", per_class=2):
        (folder / path.parent.name).mkdir(exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this JPEG stops here")
    return folder, [folder, folder / "missing.jpg"]


def predict(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """The command as a person runs it, in a process of its own, with the shipped model."""
    command = [sys.executable, "-m", "flask", "--app", "app", "predict", *map(str, args)]
    environment = {key: value for key, value in (env or ray_env()).items()
                   if key not in ("MODEL_PATH", "ONNX_MODEL_PATH", "INFERENCE_ENGINE")}
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def skipped_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("skipped ")]


def summary(stderr: str) -> str:
    """'classified N of M files' and what follows the rate, without the time it took."""
    line = [line for line in stderr.splitlines() if line.startswith("classified ")][-1]
    return line.split(" in ")[0] + line.partition(")")[2]


def test_two_node_cluster_gives_the_single_machine_answers(cluster, images, tmp_path):
    folder, paths = images
    single = tmp_path / "single.csv"
    alone = predict(*paths, "--output", single, "--top", TOP)
    assert alone.returncode == 0, alone.stderr
    rows = single.read_text().splitlines()
    assert len(rows) == 1 + 32 + 2 and rows[0].startswith("path,label,score,label_2")
    errors = [row for row in rows[1:] if not row.split(",")[1]]
    assert [row.split(",")[0] for row in errors] == [str(folder / "broken.jpg"), str(folder / "missing.jpg")]

    for decode_in in ("actors", "tasks"):
        on_ray = tmp_path / f"ray-{decode_in}.csv"
        spread = predict(*paths, "--output", on_ray, "--top", TOP, "--ray-decode", decode_in,
                         "--ray", cluster.address, env=ray_env(cluster.token))
        assert spread.returncode == 0, spread.stderr
        assert on_ray.read_text() == single.read_text(), decode_in  # paths, order, labels, scores, errors
        assert skipped_lines(spread.stderr) == skipped_lines(alone.stderr) and len(skipped_lines(alone.stderr)) == 2
        assert summary(spread.stderr) == summary(alone.stderr) == "classified 32 of 34 files; 2 could not be read"

    # By default model actors that decode their own files; with --ray-decode tasks, decode
    # tasks fed model actors. Where Ray places each is its own choice (a busy machine can
    # leave one node's actor still starting when 34 files are done), so the test asks that
    # both nodes did some of the work over the two runs, not that each held every kind.
    logs = [cluster.worker_logs(0), cluster.worker_logs(1)]
    both = logs[0] + logs[1]
    assert DECODING_MODEL_ACTOR in both and MODEL_ACTOR in both and DECODE_TASK in both
    for node in logs:
        assert any(worker in node for worker in (DECODING_MODEL_ACTOR, MODEL_ACTOR, DECODE_TASK)), node


def test_nothing_readable_exits_1_on_the_cluster_too(cluster, images, tmp_path):
    folder, _ = images
    result = predict(folder / "broken.jpg", folder / "missing.jpg", "--ray", cluster.address, env=ray_env(cluster.token))
    assert result.returncode == 1, result.stderr
    assert len(skipped_lines(result.stderr)) == 2
    assert summary(result.stderr) == "classified 0 of 2 files; 2 could not be read"


def test_without_an_address_a_local_ray_gives_the_same_json_lines(images, tmp_path):
    folder, paths = images
    alone = predict(folder / "airplane", folder / "broken.jpg", "--format", "jsonl")
    local = predict(folder / "airplane", folder / "broken.jpg", "--format", "jsonl", "--batch-size", "2", "--ray")
    batched = predict(folder / "airplane", folder / "broken.jpg", "--format", "jsonl", "--batch-size", "2")
    assert alone.returncode == local.returncode == 0, local.stderr
    records = [json.loads(line) for line in local.stdout.splitlines()]
    assert [Path(record["path"]).name for record in records] == [*sorted(p.name for p in (folder / "airplane").iterdir()), "broken.jpg"]
    assert records[-1]["error"]["code"] == "not_an_image"
    # Forward passes of two give the numbers of the command's own batches of two, and the
    # same labels as one by one.
    assert local.stdout == batched.stdout
    assert [r.get("label") for r in records] == [json.loads(line).get("label") for line in alone.stdout.splitlines()]


def test_an_unreachable_cluster_is_a_clear_error(images):
    folder, _ = images
    result = predict(folder / "broken.jpg", "--ray", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:" in result.stderr
