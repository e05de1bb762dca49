"""The suite stands alone: it reads no file outside the repository, and no data-set setting.

The full data set exists only on some machines (training/data_set.py says where it is looked
for); a test that read it would pass there and fail on every other clone. The guard installed
here makes such a read fail on every machine instead, and the names listed are what the
static check in test_standalone.py looks for in the tests' sources.
"""

from __future__ import annotations

import os
import sys

from training.data_set import DATA_SET_ENV, PROJECT_COPY

# Everything beside the repository that this project's own machines have: the folder that
# holds the project's copy of the data set (training/data_set.py names it once).
OUTSIDE = str(PROJECT_COPY.parents[1])
FORBIDDEN_NAMES = (DATA_SET_ENV,)
_WATCHED_EVENTS = {"open", "os.listdir", "os.scandir", "os.chdir"}


class OutsideRepositoryRead(RuntimeError):
    """A test tried to read the data set (or anything) beside the repository.

    Not an OSError: pathlib's glob swallows those, and the read would go unnoticed.
    """


def _guard(event: str, args) -> None:
    if event not in _WATCHED_EVENTS or not args:
        return
    path = args[0]
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, (str, os.PathLike)):
        absolute = os.path.abspath(path)
        if absolute == OUTSIDE or absolute.startswith(OUTSIDE + os.sep):
            raise OutsideRepositoryRead(
                f"the tests read {absolute}, outside the repository: use the fixtures in tests/fixtures/"
            )


def install_guard() -> None:
    """Refuse reads beside the repository in this process, and hide the data-set setting from
    the servers, kernels and commands that the tests start."""
    for name in FORBIDDEN_NAMES:
        os.environ.pop(name, None)
    sys.addaudithook(_guard)

