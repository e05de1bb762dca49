"""Finding the training data set: a folder, the public archive, or a default; a clear stop otherwise."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from training import data_set
from training.data_set import DataSetNotFound, find_data_set, prepare_data_set

from testing import ROOT
from testing.samples import make_image_folder


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No default location holds a data set, and the setting is unset."""
    monkeypatch.setattr(data_set, "PROJECT_COPY", tmp_path / "project-copy")
    monkeypatch.setattr(data_set, "PREPARED", tmp_path / "prepared")
    monkeypatch.delenv(data_set.DATA_SET_ENV, raising=False)
    return tmp_path


def public_archive(tmp_path):
    source = make_image_folder(tmp_path / "UCMerced_LandUse" / "Images", fmt="TIFF", suffix=".tif")
    archive = tmp_path / "UCMerced_LandUse.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(source.rglob("*.tif")):
            out.write(path, path.relative_to(tmp_path))
    return archive


def test_with_no_data_set_anywhere_the_message_says_where_to_get_it(nowhere):
    with pytest.raises(DataSetNotFound) as caught:
        find_data_set()
    message = str(caught.value)
    assert "UCMerced_LandUse.zip" in message and "make data ARCHIVE=" in message
    assert data_set.DATA_SET_ENV in message


def test_the_project_copy_is_the_default_where_it_exists(nowhere):
    make_image_folder(nowhere / "prepared")
    assert find_data_set() == nowhere / "prepared"
    make_image_folder(nowhere / "project-copy")
    assert find_data_set() == nowhere / "project-copy"


def test_the_setting_and_an_explicit_path_win_over_the_defaults(nowhere, monkeypatch):
    make_image_folder(nowhere / "project-copy")
    chosen = make_image_folder(nowhere / "mine")
    monkeypatch.setenv(data_set.DATA_SET_ENV, str(chosen))
    assert find_data_set() == chosen
    explicit = make_image_folder(nowhere / "explicit")
    assert find_data_set(explicit) == explicit


def test_make_data_prepares_the_public_archive_where_training_finds_it(nowhere):
    target = prepare_data_set(public_archive(nowhere), target=data_set.PREPARED)
    assert target == nowhere / "prepared"
    assert sorted(p.name for p in target.iterdir()) == ["alpha", "beta", "gamma"]
    assert find_data_set() == target
    with pytest.raises(DataSetNotFound, match="not a zip"):
        prepare_data_set(nowhere / "prepared" / "alpha" / "alpha00.tif")


@pytest.mark.parametrize("module", ["bench.run", "training.variants"])
def test_commands_that_need_the_data_set_stop_and_say_what_to_do(tmp_path, module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--data", str(tmp_path / "nowhere")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "No data set at" in result.stderr and "make data ARCHIVE=" in result.stderr


def test_public_archive_zip_is_found_through_its_wrapper_folders(tmp_path):
    root = data_set.resolve_data_dir(public_archive(tmp_path), extract_to=tmp_path / "extracted")
    assert root.name == "Images"
    assert sorted(p.name for p in root.iterdir()) == ["alpha", "beta", "gamma"]
