"""Making the repository one's own (docs/training.md#make-it-your-own), as a user does it.

In a scratch copy of this repository: train the notebook on a data set of other classes (a
quick run: one epoch, five images per class), so that its model.zip and the variants beside
it are the user's; check the file as a user does (`flask --app app check-model model.zip`);
then run the tests of the shipped model there, which must pass on it as they do on ours.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.model import load_model
from classifier.onnx_copy import matching_onnx_copy

from testing import ROOT
from testing.samples import make_image_folder

pytestmark = pytest.mark.slow

# Not UC Merced's, and not as many: four colours, five images each.
CLASSES = ("amber", "cobalt", "jade", "scarlet")
# The tests that read the shipped model: its contract, its forms, its drift score, a server
# and the lean path serving it.
SHIPPED_MODEL_TESTS = ("tests/test_shipped_model.py", "tests/test_shipped_variants.py", "tests/test_shipped_drift.py",
                       "tests/test_server.py", "tests/test_lean_parity.py", "tests/test_variants.py")


def copy_of_the_repository(target: Path) -> Path:
    """The repository's files as they are on disk (tracked and new, not ignored), committed in
    a repository of their own: what a user's clone holds, with this working copy's changes."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)  # with its mode: bin/start-nginx runs
    git = ["git", "-c", "user.name=own model test", "-c", "user.email=own-model@localhost",
           "-c", "commit.gpgsign=false"]
    for command in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "the repository"]):
        subprocess.run([*git, *command], cwd=target, capture_output=True, check=True)
    return target


def run(command: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def own_repository(tmp_path_factory) -> Path:
    """A copy of the repository whose model.zip the notebook trained on a data set of its own."""
    work = tmp_path_factory.mktemp("own-model")
    data = make_image_folder(work / "my-photos", classes=CLASSES, per_class=5, fmt="JPEG", suffix=".jpg")
    clone = copy_of_the_repository(work / "clone")
    # The command docs/training.md gives, quick: the notebook writes model.zip and its variants.
    run([sys.executable, "-m", "papermill", "train_notebook.ipynb", str(work / "run.ipynb"),
         "-p", "data_dir", str(data), "-p", "images_per_class", "5", "-p", "epochs", "1",
         "-p", "output_path", "model.zip", "--no-progress-bar"], cwd=clone, timeout=600)
    return clone


def test_the_notebook_makes_the_repositorys_model_and_variants_the_users(own_repository):
    model = load_model(own_repository / "model.zip")
    assert model.labels == CLASSES
    assert model.meta["classes"] == len(CLASSES) and model.meta["dataset"].startswith("my-photos: ")
    assert (own_repository / "model.zip").read_bytes() != (ROOT / "model.zip").read_bytes()
    assert matching_onnx_copy(own_repository / "model.onnx", own_repository / "model.zip")  # the page's copy
    assert matching_onnx_copy(own_repository / "model-browser.onnx", own_repository / "model.zip")  # and its form
    table = (own_repository / "docs" / "model-variants.md").read_text()
    assert "my-photos validation split" in table


def test_check_model_accepts_it(own_repository):
    result = run([sys.executable, "-m", "flask", "--app", "app", "check-model", "model.zip"],
                 cwd=own_repository, timeout=300)
    assert re.search(rf"^ok: model\.zip is .*, {len(CLASSES)} classes; smoke image -> ({'|'.join(CLASSES)}) ",
                     result.stdout, re.M), result.stdout


def test_the_shipped_model_tests_pass_on_it(own_repository):
    """Run there, they import that copy's code and read its model.zip (testing.ROOT is the copy)."""
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SHIPPED_MODEL_TESTS],
                 cwd=own_repository, timeout=900)
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary), summary
    assert not re.search(r"failed|error|skipped|deselected", summary), summary
