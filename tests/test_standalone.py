"""The suite needs nothing beside the repository: no data set, no setting that names one."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from . import standalone
from testing import ROOT
from testing.samples import DATA_DIR
from .standalone import FORBIDDEN_NAMES, OUTSIDE, OutsideRepositoryRead

TESTS = ROOT / "tests"
# The guard's own two files name what they forbid.
GUARD_FILES = {TESTS / "standalone.py", TESTS / "test_standalone.py"}
BESIDE = os.path.basename(OUTSIDE)  # the folder's name, as a source would spell it
OUTSIDE_PATTERNS = [
    re.compile(re.escape(f"../{BESIDE}")),
    re.compile(rf"""["']{re.escape(BESIDE)}["']"""),
    *(re.compile(re.escape(name)) for name in FORBIDDEN_NAMES),
]


def test_reading_beside_the_repository_fails_in_every_test():
    # The hook runs before the file system is asked, so this holds where nothing is there too.
    beside = os.path.join(OUTSIDE, "data")
    with pytest.raises(OutsideRepositoryRead, match="outside the repository"):
        open(os.path.join(beside, "README.md"), "rb")
    with pytest.raises(OutsideRepositoryRead):
        os.listdir(beside)


def test_a_glob_beside_the_repository_fails_too(tmp_path, monkeypatch):
    # pathlib swallows OSErrors while it globs; the guard's error must get through. A folder
    # of the tests' own stands in for the one beside the repository, which CI's clone lacks.
    outside = tmp_path / BESIDE
    (outside / "data" / "ucmerced" / "beach").mkdir(parents=True)
    monkeypatch.setattr(standalone, "OUTSIDE", str(outside))
    with pytest.raises(OutsideRepositoryRead):
        list((outside / "data").glob("*/*"))
    with pytest.raises(OutsideRepositoryRead):
        sorted((outside / "data" / "ucmerced").iterdir())


def test_no_test_source_names_a_place_outside_the_repository():
    offenders = []
    # The helpers the tests run (testing/) are the tests' sources too.
    for path in sorted([*TESTS.rglob("*.py"), *(ROOT / "testing").rglob("*.py")]):
        if path in GUARD_FILES:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(pattern.search(line) for pattern in OUTSIDE_PATTERNS):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_guard_would_catch_a_source_that_does():
    for line in (f'DATA = ROOT.parent / "{BESIDE}" / "data"', f'open("../{BESIDE}/data/README.md")',
                 f'os.environ.get("{FORBIDDEN_NAMES[0]}")'):
        assert any(pattern.search(line) for pattern in OUTSIDE_PATTERNS), line


def test_no_fixture_is_a_link_out_of_the_repository():
    links = [path for path in TESTS.rglob("*") if path.is_symlink()]
    assert not links, links


def test_the_data_set_setting_is_hidden_from_what_the_tests_start():
    assert not [name for name in FORBIDDEN_NAMES if name in os.environ]
    child = subprocess.run(
        [sys.executable, "-c", "import os, sys; print(sorted(set(sys.argv[1:]) & set(os.environ)))", *FORBIDDEN_NAMES],
        capture_output=True, text=True, check=True,
    )
    assert child.stdout.strip() == "[]"


def test_the_fixtures_hold_a_few_images_of_every_class_and_stay_small():
    classes = sorted(path for path in (DATA_DIR / "ucmerced").iterdir() if path.is_dir())
    assert len(classes) == 16
    assert all(len(list(folder.glob("*.jpg"))) == 4 for folder in classes)
    assert (DATA_DIR / "ucmerced-tif" / "beach00.tif").read_bytes()[:4] in (b"II*\x00", b"MM\x00*")
    total = sum(path.stat().st_size for path in (TESTS / "fixtures").rglob("*") if path.is_file())
    assert total < 2.5 * 1024 * 1024, total
