"""What the tests and the benchmarks share: the real server on a loopback port and clients
for it, a throw-away PostgreSQL and a Ray cluster on this machine, sample images and models.

Nothing here is served, and none of it is needed to serve: ``requirements-dev.txt`` holds
what it imports. The fixtures that use these are in ``tests/conftest.py``.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
