"""gunicorn's master checks the ONNX copy against MODEL_PATH before any worker serves.

Once when the server starts and once when it reloads its workers (SIGHUP, as ``swap-model``
sends), the master runs ``python -m web.serving_check``: a process that reads the server's
settings, checks the copy with torch (``classifier.verified_copy.check_once``), records the
verdict where the workers look for it, and exits. The workers then serve the copy without
importing torch, or load TorchScript and say why (docs/memory.md).

A setting that cannot work stops the start with the reason: ``INFERENCE_ENGINE=onnxruntime``
with a copy that is missing, stale or disagrees, or a model file that cannot be served at
all. On a reload the server keeps running (gunicorn would otherwise stop serving), and the
reason goes to the log; ``swap-model`` refuses such a file before it ever gets there.

This module imports only the standard library until ``main`` runs, in the subprocess: the
master stays small and never loads torch, Flask or numpy. The two hooks are named in
gunicorn.conf.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Torch's import and both models' first runs: seconds; a hung check must not hang the master.
CHECK_TIMEOUT_S = 300


def on_starting(server) -> None:
    """gunicorn hook: check before the first worker is forked; a fatal verdict stops the start."""
    ok, message = run_check(reuse=False)
    if not ok:
        # gunicorn prints a RuntimeError from a hook as "Error: ..." and exits with status 1.
        raise RuntimeError(f"the model cannot be served: {message}")
    server.log.info("model check: %s", message)


def on_reload(server) -> None:
    """gunicorn hook: check again before the new workers are forked (a swapped model.zip)."""
    ok, message = run_check(reuse=True)
    (server.log.info if ok else server.log.error)("model check: %s", message)


def run_check(reuse: bool) -> tuple[bool, str]:
    """Run the check in a subprocess: (whether workers can serve, what they will serve or why not)."""
    command = [sys.executable, "-m", "web.serving_check", *(["--reuse"] if reuse else [])]
    # In the master's directory, as the workers are (MODEL_PATH may be relative), with this
    # project importable from wherever that is.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    try:
        done = subprocess.run(command, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
                              timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"the check took over {CHECK_TIMEOUT_S}s"
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return done.returncode == 0, (lines[-1] if lines else f"the check exited with status {done.returncode}")


def main(argv=None) -> int:
    """The subprocess: the server's settings from the environment, the check, one line saying the verdict."""
    parser = argparse.ArgumentParser(description="Check the served model's ONNX copy with the server's settings.")
    parser.add_argument("--reuse", action="store_true", help="accept a record of these very files")
    args = parser.parse_args(argv)

    from classifier.engines import ENGINES
    from classifier.errors import OnnxCopyUnavailable, ModelContractError
    from classifier.verified_copy import CheckStore, check_once

    from .settings import read_settings

    settings = read_settings()
    setting, model, onnx = settings["INFERENCE_ENGINE"], settings["MODEL_PATH"], settings["ONNX_MODEL_PATH"]
    if setting not in ENGINES:
        print(f"INFERENCE_ENGINE must be one of {', '.join(ENGINES)}, not {setting!r}", file=sys.stderr)
        return 1
    if setting == "torchscript":
        print(f"INFERENCE_ENGINE=torchscript: workers serve {model} with TorchScript")
        return 0
    try:
        check = check_once(model, onnx, CheckStore(settings["VERIFIED_COPIES_DIR"] or None), reuse=args.reuse)
        if not check.verified:
            raise OnnxCopyUnavailable(check.reason)
    except OnnxCopyUnavailable as refusal:
        if setting == "onnxruntime":
            print(f"INFERENCE_ENGINE=onnxruntime, but {refusal.message}", file=sys.stderr)
            return 1
        print(f"workers serve {model} with TorchScript: {refusal.message}")
        return 0
    except ModelContractError as error:
        print(str(error), file=sys.stderr)
        return 1
    print(f"workers serve {onnx} with ONNX Runtime, without torch: {check.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
