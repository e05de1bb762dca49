"""Drive a server with locust (headless) and summarise every request it timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "bench" / "locustfile.py"


@dataclass
class LoadResult:
    """What one closed-loop run measured."""

    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_rps: float
    wall_s: float
    client_cpu_ms_per_request: float  # the load tool's own CPU, which shares the cores

    def to_json(self) -> dict:
        return asdict(self)


def summarise(latencies_ms, count: int, errors: int, wall_s: float, client_cpu_s: float = 0.0) -> LoadResult:
    p50, p95, p99 = np.percentile(np.asarray(latencies_ms, dtype=float), [50, 95, 99])
    return LoadResult(
        requests=count,
        errors=errors,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        throughput_rps=count / wall_s if wall_s > 0 else 0.0,
        wall_s=wall_s,
        client_cpu_ms_per_request=1000 * client_cpu_s / max(1, count),
    )


def run_locust(url: str, payload_list: Path, count: int, concurrency: int, record: Path,
               timeout: float = 1800, batch_files: int = 0) -> LoadResult:
    """Closed loop: ``concurrency`` users, ``count`` requests in all, spawned at once.

    ``batch_files`` > 0: each request is a POST /predict/batch of that many images.
    """
    command = [
        str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless",
        "--host", url, "--users", str(concurrency), "--spawn-rate", str(concurrency),
        "--payload-list", str(payload_list), "--request-count", str(count), "--record", str(record),
        "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0",
        "--batch-files", str(batch_files),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log_path = record.with_suffix(".log")
    with open(log_path, "wb") as log:
        try:
            returncode = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"locust ran over {timeout:.0f}s, see {log_path}") from None
    if returncode != 0 or not record.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"locust failed ({returncode}), see {log_path}:\n{tail}")
    recorded = json.loads(record.read_text())
    requests = recorded["requests"]
    if len(requests) != count:
        raise RuntimeError(f"locust recorded {len(requests)} requests, expected {count}")
    starts = np.array([r[0] for r in requests])
    latencies = np.array([r[1] for r in requests])
    wall = float(np.max(starts + latencies / 1000) - np.min(starts))
    errors = sum(1 for r in requests if not r[3])
    return summarise(latencies, count, errors, wall, recorded["cpu_seconds"])
