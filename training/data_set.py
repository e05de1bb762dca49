"""Where the training data set is: a folder, the public archive, or this project's own copy.

Training and the benchmark read the whole data set; the test suite never does (it has a few
images in tests/fixtures/). No torch here, so the benchmark's runner can use it too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
# A folder of <class>/<image> or the archive itself; overrides every default below.
DATA_SET_ENV = "UCMERCED_DATA"
# Where `make data` puts the public archive's images.
PREPARED = REPO / "data" / "ucmerced"
# The copy of 16 classes kept beside the repository on this project's own machines.
PROJECT_COPY = REPO.parent / "shared" / "data" / "ucmerced"
ARCHIVE_NAME = "UCMerced_LandUse.zip"
ARCHIVE_PAGE = "http://weegee.vision.ucmerced.edu/datasets/landuse.html"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"}

HOW_TO_GET_IT = (
    f"Download {ARCHIVE_NAME} (UC Merced Land Use, 21 classes) from {ARCHIVE_PAGE}, then run "
    f"`make data ARCHIVE=path/to/{ARCHIVE_NAME}`; or point {DATA_SET_ENV} (or the command's "
    "data option) at any folder of <class>/<image> folders."
)


class DataSetNotFound(FileNotFoundError):
    """No data set where one was asked for or looked for; the message says what to do."""


def find_data_set(path: str | Path | None = None) -> Path:
    """The folder of ``<class>/<image>`` to use: ``path``, else $UCMERCED_DATA, else a default.

    The defaults, in order: this project's own copy beside the repository (where it exists),
    then the folder that `make data` prepares. A zip given as ``path`` is extracted once.
    """
    chosen = path or os.environ.get(DATA_SET_ENV, "").strip()
    if chosen:
        return resolve_data_dir(chosen)
    for candidate in (PROJECT_COPY, PREPARED):
        if candidate.is_dir():
            return resolve_data_dir(candidate)
    raise DataSetNotFound(f"No data set found (looked at {PROJECT_COPY} and {PREPARED}). {HOW_TO_GET_IT}")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """The ``--data`` option of every command that reads the data set."""
    parser.add_argument("--data", help="a folder of <class>/<image> or UCMerced_LandUse.zip; "
                        "default: training/data_set.py's (docs/training.md, Data set)")


def data_set_or_exit(parser: argparse.ArgumentParser, path: str | Path | None) -> Path:
    """``find_data_set(path)``, or the parser's exit 2 with what to do."""
    try:
        return find_data_set(path)
    except DataSetNotFound as error:
        parser.exit(2, f"{parser.prog}: {error}\n")


def resolve_data_dir(path: str | Path, extract_to: str | Path = REPO / "runs" / "data") -> Path:
    """The folder of ``<class>/<image>`` to train on, from a folder or the UC Merced zip.

    The public archive ``UCMerced_LandUse.zip`` holds ``UCMerced_LandUse/Images/<class>/``;
    it is extracted once and the folder whose children are the classes is returned.
    """
    path = Path(path).expanduser()
    if path.is_file() and zipfile.is_zipfile(path):
        target = Path(extract_to) / path.stem
        if not target.is_dir():
            with zipfile.ZipFile(path) as archive:
                archive.extractall(target)
        path = target
    if not path.is_dir():
        raise DataSetNotFound(f"No data set at {path}: give a folder of <class>/<image> or a zip. {HOW_TO_GET_IT}")
    return _find_class_root(path)


def prepare_data_set(archive: str | Path, target: Path = PREPARED) -> Path:
    """Extract the public archive's class folders to ``target``, where `find_data_set` looks."""
    archive = Path(archive).expanduser()
    if not (archive.is_file() and zipfile.is_zipfile(archive)):
        raise DataSetNotFound(f"{archive} is not a zip archive. {HOW_TO_GET_IT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        root = resolve_data_dir(archive, extract_to=scratch)
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)
    return target


def image_files(folder: Path) -> list[Path]:
    """The images directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _find_class_root(path: Path) -> Path:
    """Walk down single-folder wrappers (archive/Images/...) to the folder of class folders."""
    for candidate in [path, *sorted(p for p in path.rglob("*") if p.is_dir())]:
        subfolders = [p for p in candidate.iterdir() if p.is_dir()]
        if len(subfolders) >= 2 and all(image_files(folder) for folder in subfolders):
            return candidate
    raise DataSetNotFound(f"{path} holds no folders of images (<class>/<image>).")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the UC Merced archive for training and the benchmark.")
    parser.add_argument("archive", nargs="?", help=f"the downloaded {ARCHIVE_NAME}")
    args = parser.parse_args(argv)
    try:
        if args.archive:
            print(f"{prepare_data_set(args.archive)}: ready; training and `make bench` use it")
        else:
            print(f"data set: {find_data_set()}")
    except DataSetNotFound as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
