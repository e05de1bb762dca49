"""gunicorn's side of the front: say when every worker has loaded and warmed up the model.

``bin/start-nginx`` sets ``APP_READY_FILE`` and starts nginx, which opens ``$PORT``, only
once that file exists: until then the platform's router finds nothing listening and sends
no traffic. Each worker runs ``post_worker_init`` after it loaded the app (web/served_model.py
loads and warms up the model), leaves a mark, and the one that completes the set writes the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from web.settings import read_runtime

READY_FILE_ENV = "APP_READY_FILE"


def post_worker_init(worker) -> None:
    ready_file = read_runtime().ready_file
    if not ready_file:
        return  # gunicorn started without the front (bench's direct contender, by hand)
    marks = Path(f"{ready_file}.workers")
    marks.mkdir(exist_ok=True)
    (marks / str(os.getpid())).touch()
    if len(list(marks.iterdir())) >= worker.cfg.workers:
        # Write then rename, so that the front never sees half a file.
        partial = Path(f"{ready_file}.{os.getpid()}")
        partial.write_text(f"{worker.cfg.workers} workers ready\n")
        partial.replace(ready_file)
