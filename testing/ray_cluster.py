"""A Ray cluster of real nodes on this machine, for the tests and the benchmark.

Each node is a ``ray start --block`` in a session of its own, with one CPU, a temp folder of
its own and the cluster's own token (not the user's ~/.ray one). ``stop`` ends those
processes and what they spawned, by process id; never ``ray stop``, which would end every
Ray on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from .servers import free_port

RAY = Path(sys.executable).with_name("ray")


def ray_env(token: str | None = None) -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    if token:  # the cluster's own token, instead of the one in this user's ~/.ray
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


class Cluster:
    """A head node and ``nodes - 1`` nodes joining it; a context manager that stops them."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, object_store_bytes: int = 200_000_000):
        self.nodes, self.cpus_per_node, self.object_store_bytes = nodes, cpus_per_node, object_store_bytes
        self.token = secrets.token_hex(32)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.log_files: list = []
        # Short paths of their own: Ray's socket paths under them must stay under 108 bytes.
        self.temp_dirs = [Path(tempfile.mkdtemp(prefix="ray-test-", dir="/tmp")) for _ in range(nodes)]

    def start(self) -> None:
        common = [f"--num-cpus={self.cpus_per_node}", "--block", "--disable-usage-stats",
                  f"--object-store-memory={self.object_store_bytes}"]
        self._start("head", ["--head", f"--port={self.port}",
                             "--include-dashboard=false", f"--temp-dir={self.temp_dirs[0]}", *common])
        self._wait_for_nodes(1)
        for node in range(1, self.nodes):
            self._start(f"node{node}", [f"--address={self.address}", f"--temp-dir={self.temp_dirs[node]}", *common])
        self._wait_for_nodes(self.nodes)

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.stop()
        finally:
            for folder in self.temp_dirs:
                shutil.rmtree(folder, ignore_errors=True)

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.temp_dirs[len(self.processes)] / f"{name}.log", "w")
        self.log_files.append(log)
        self.processes.append(subprocess.Popen([str(RAY), "start", *args], env=ray_env(self.token),
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def _wait_for_nodes(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"ray start exited with {process.returncode}: {self.logs()}")
            status = subprocess.run([str(RAY), "status", f"--address={self.address}"], env=ray_env(self.token),
                                    capture_output=True, text=True, timeout=60)
            if status.returncode == 0 and status.stdout.count(" node_") >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not reach {count} nodes in {timeout:.0f}s: {self.logs()}")

    def worker_logs(self, node: int) -> str:
        """What the node's workers printed first: Ray names each task and actor there."""
        return "\n".join(path.read_text(errors="replace") for path in self.temp_dirs[node].glob("session_*/logs/worker-*.out"))

    def logs(self) -> str:
        """The end of each ``ray start``'s output, to say why a node did not come up."""
        return "\n".join(log.read_text(errors="replace")[-2000:] for folder in self.temp_dirs for log in folder.glob("*.log"))

    def stop(self) -> None:
        """SIGTERM to what we started and everything it spawned, then SIGKILL what is left."""
        family: list[psutil.Process] = []
        for process in self.processes:
            try:
                started = psutil.Process(process.pid)
                family += [started, *started.children(recursive=True)]  # the nodes' daemons and workers
            except psutil.NoSuchProcess:
                pass
        for process in family:
            try:
                process.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        # A test cluster holds nothing worth draining: what is not gone in 2 s is killed.
        _, alive = psutil.wait_procs(family, timeout=2)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for process in self.processes:
            process.wait(timeout=10)
        for log in self.log_files:
            log.close()
