"""``flask --app app predict PATH...``: files and folders in, one line per file out.

Run through Flask's CLI runner with the tiny colour model, whose answers are known: a red
image is "red". Unreadable files are reported one by one; the exit status is 1 only when
nothing could be classified.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testing import ROOT
from testing.samples import image_bytes, model_answer

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture
def images(tmp_path) -> Path:
    """red.png; folder/green.jpg, folder/deeper/blue.webp; and what a folder search skips."""
    (tmp_path / "red.png").write_bytes(image_bytes("PNG", colour=RED))
    folder = tmp_path / "folder"
    (folder / "deeper").mkdir(parents=True)
    (folder / "green.jpg").write_bytes(image_bytes("JPEG", colour=GREEN))
    (folder / "deeper" / "blue.webp").write_bytes(image_bytes("WEBP", colour=BLUE, lossless=True))
    (folder / "notes.txt").write_text("not an image, and not named like one")
    (folder / ".thumbnails").mkdir()
    (folder / ".thumbnails" / "red.png").write_bytes(image_bytes("PNG", colour=RED))
    return tmp_path


def predict(runner, *args):
    return runner.invoke(args=["predict", *map(str, args)])


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_files_and_folders_recursively_as_csv(runner, images):
    result = predict(runner, images / "red.png", images / "folder")
    assert result.exit_code == 0, result.output
    rows = csv_rows(result.stdout)
    assert [Path(row["path"]).name for row in rows] == ["red.png", "blue.webp", "green.jpg"]
    assert [row["label"] for row in rows] == ["red", "blue", "green"]
    assert all(float(row["score"]) > 0.9 and row["error"] == "" for row in rows)
    assert list(rows[0]) == ["path", "label", "score", "label_2", "score_2", "label_3", "score_3", "error"]
    assert "classified 3 of 3 files" in result.stderr


def test_json_lines_carry_the_apis_answer_and_the_path(runner, client, images):
    result = predict(runner, images / "folder", "--format", "jsonl", "--top", "2")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["label"] for record in records] == ["blue", "green"]
    assert all(len(record["top"]) == 2 for record in records)
    api = client.post("/predict?top=2", data={"file": (io.BytesIO((images / "folder" / "green.jpg").read_bytes()), "g.jpg")}).json
    cli = records[1]
    assert cli["label"] == api["label"] and [t["label"] for t in cli["top"]] == [t["label"] for t in api["top"]]
    assert cli["score"] == pytest.approx(api["score"], abs=1e-5)  # the same decoding and model


def test_unreadable_files_are_reported_one_by_one_and_the_rest_classified(runner, images, tmp_path):
    broken = tmp_path / "folder" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this JPEG stops here")
    missing = tmp_path / "missing.png"
    result = predict(runner, missing, images / "folder", images / "folder" / "notes.txt")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 3
    assert f"skipped {missing}: No such file or directory" in skipped
    assert any(line.startswith(f"skipped {broken}:") for line in skipped)
    rows = {Path(row["path"]).name: row for row in csv_rows(result.stdout)}
    assert rows["missing.png"]["error"].startswith("unreadable: ")
    assert rows["broken.jpg"]["error"].startswith("not_an_image: ") and rows["broken.jpg"]["label"] == ""
    assert rows["notes.txt"]["error"].startswith("not_an_image: ")
    assert rows["green.jpg"]["label"] == "green"
    assert "classified 2 of 5 files" in result.stderr and "3 could not be read" in result.stderr


def test_exit_status_is_1_only_when_nothing_could_be_read(runner, images, tmp_path):
    assert predict(runner, images / "folder" / "notes.txt", tmp_path / "missing.jpg").exit_code == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    result = predict(runner, empty)
    assert result.exit_code == 1 and "No image files found" in result.stderr
    assert predict(runner, images / "folder" / "notes.txt", images / "red.png").exit_code == 0


def test_batches_and_lanes_change_the_speed_not_the_answers(runner, tmp_path):
    colours = [RED, GREEN, BLUE, (200, 30, 30), (30, 200, 30), (30, 30, 200), (250, 10, 10)]
    for index, colour in enumerate(colours * 2):
        (tmp_path / f"{index:02d}.png").write_bytes(image_bytes("PNG", colour=colour, size=(50 + index, 40)))
    one_by_one = predict(runner, tmp_path, "--batch-size", "1", "--lanes", "1", "--workers", "1")
    batched = predict(runner, tmp_path, "--batch-size", "3", "--lanes", "2", "--workers", "3")
    assert one_by_one.exit_code == batched.exit_code == 0
    assert [row["label"] for row in csv_rows(one_by_one.stdout)] == ["red", "green", "blue", "red", "green", "blue", "red"] * 2
    assert [(r["path"], r["label"]) for r in csv_rows(batched.stdout)] == [(r["path"], r["label"]) for r in csv_rows(one_by_one.stdout)]
    for a, b in zip(csv_rows(batched.stdout), csv_rows(one_by_one.stdout)):
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-5)


def test_output_file_and_bad_options(runner, images, tmp_path):
    out = tmp_path / "predictions.csv"
    assert predict(runner, images / "red.png", "--output", out).exit_code == 0
    assert csv_rows(out.read_text())[0]["label"] == "red"
    for bad in (["--top", "0"], ["--top", "4"], ["--top", "x"], ["--batch-size", "0"], ["--format", "xml"]):
        result = predict(runner, images / "red.png", *bad)
        assert result.exit_code == 2, (bad, result.output)  # a usage error, said on stderr
    assert "'top' must be from 1 to 3" in predict(runner, images / "red.png", "--top", "4").stderr


def test_the_shipped_model_on_the_lean_path_without_torch_and_with_torchscripts_answers(data_dir):
    """The command in its own process, as a person runs it: ONNX Runtime on the verified copy."""
    folders = [data_dir / "ucmerced" / cls for cls in ("airplane", "beach", "river")]
    environment = {**os.environ, "MODEL_PATH": str(ROOT / "model.zip"), "ONNX_MODEL_PATH": str(ROOT / "model.onnx")}

    def run(engine: str) -> subprocess.CompletedProcess:
        # -X importtime lists every module the process imports, on stderr.
        return subprocess.run([sys.executable, "-X", "importtime", "-m", "flask", "--app", "app", "predict",
                               *map(str, folders), "--format", "jsonl", "--batch-size", "2", "--lanes", "2"],
                              cwd=ROOT, env={**environment, "INFERENCE_ENGINE": engine},
                              capture_output=True, text=True, timeout=300)

    lean, torchscript = run("onnxruntime"), run("torchscript")
    assert lean.returncode == torchscript.returncode == 0, lean.stderr[-2000:] + torchscript.stderr[-2000:]
    assert not re.search(r"\|\s+torch(\.|$)", lean.stderr, re.MULTILINE), "the lean path imported torch"
    assert re.search(r"\|\s+torch$", torchscript.stderr, re.MULTILINE)  # the check sees an import
    lean_rows, torchscript_rows = ([json.loads(line) for line in run.stdout.splitlines()] for run in (lean, torchscript))
    assert len(lean_rows) == sum(len(list(folder.glob("*.jpg"))) for folder in folders) >= 6
    for a, b in zip(lean_rows, torchscript_rows, strict=True):
        assert a["path"] == b["path"] and [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a["top"], b["top"])) <= 1e-5
        assert a["label"] == model_answer(Path(a["path"]))["label"]  # the shipped model's own answer
