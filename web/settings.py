"""Configuration: defaults in one place, overridden by the environment, checked at start-up."""

from __future__ import annotations

import os
import re

from classifier.engines import ENGINES
from classifier.images import DEFAULT_MAX_PIXELS

MEGABYTE = 1024 * 1024
# Short keys can be guessed; `python -c "import secrets; print(secrets.token_urlsafe(32))"`.
MIN_API_KEY_LENGTH = 16


def default_torch_threads() -> int:
    """Split the cores between gunicorn's workers so they do not fight over them."""
    workers = _int_env("WEB_CONCURRENCY", 1)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _int_env(name: str, default: int) -> int:
    return _parsed_env(name, default, int, "an integer")


def _float_env(name: str, default: float) -> float:
    return _parsed_env(name, default, float, "a number")


def _parsed_env(name: str, default, parse, kind: str):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SystemExit(f"{name} must be {kind}, not {raw!r}") from None


def _flag_env(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return default if not raw else raw not in ("0", "false", "no", "off")


DURATION_PATTERN = re.compile(r"([0-9]{1,7})([smhd])")
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 3650 * 86400  # ten years: any window longer is a mistake


def parse_duration(raw: str) -> int:
    """Seconds in a duration such as ``90s``, ``15m``, ``24h`` or ``7d``; ValueError otherwise."""
    match = DURATION_PATTERN.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"a duration is a whole number and a unit (s, m, h or d), such as 24h; not {raw!r}")
    seconds = int(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{raw!r} is longer than the longest window, {MAX_DURATION_S // 86400}d")
    return seconds


def settings_from_env() -> dict:
    """Flask config keys read from environment variables of the same name."""
    return {
        "MODEL_PATH": os.environ.get("MODEL_PATH", "model.zip"),
        "MAX_CONTENT_LENGTH": _int_env("MAX_UPLOAD_MB", 20) * MEGABYTE,
        "MAX_IMAGE_PIXELS": _int_env("MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS),
        "MAX_BATCH_FILES": _int_env("MAX_BATCH_FILES", 16),
        "TORCH_THREADS": _int_env("TORCH_THREADS", default_torch_threads()),
        "CORS_ORIGINS": os.environ.get("CORS_ORIGINS", "*"),
        # Empty: /predict is open. Set: /predict* need it (web/auth.py).
        "API_KEY": os.environ.get("API_KEY", "").strip(),
        # Where the page at / sends images; empty means its own origin.
        "API_BASE": os.environ.get("API_BASE", "").strip().rstrip("/"),
        "LOAD_MODEL": os.environ.get("LOAD_MODEL", "1") not in ("0", "false", "no"),
        # The ONNX copy of the model that the page can run in the browser; empty: none.
        "DEVICE_MODEL_PATH": os.environ.get("DEVICE_MODEL_PATH", "model.onnx").strip(),
        # What runs the model (classifier/engines.py): auto serves the verified ONNX copy at
        # ONNX_MODEL_PATH with ONNX Runtime where there is one, else the TorchScript file.
        "INFERENCE_ENGINE": os.environ.get("INFERENCE_ENGINE", "auto").strip().lower(),
        "ONNX_MODEL_PATH": os.environ.get("ONNX_MODEL_PATH", "model.onnx").strip(),
        # Where the checks of the ONNX copy against MODEL_PATH are recorded, so that workers
        # serve it without torch (classifier/verified_copy.py); empty: a directory of this
        # user's under the system's temporary directory.
        "VERIFIED_COPIES_DIR": os.environ.get("VERIFIED_COPIES_DIR", "").strip(),
        # Monitoring (docs/monitoring.md). Empty DATABASE_URL: SQLite in the instance folder.
        "DATABASE_URL": os.environ.get("DATABASE_URL", "").strip(),
        "RECORD_PREDICTIONS": _flag_env("RECORD_PREDICTIONS", True),
        # Off: no image is kept. On: the 224x224 copy of each image is stored for retraining.
        "KEEP_IMAGES": _flag_env("KEEP_IMAGES", False),
        # Records are queued and written in batches by a thread in each worker (web/record_writer.py):
        # at most this many waiting, written at least this often.
        "RECORD_QUEUE_LIMIT": _int_env("RECORD_QUEUE_LIMIT", 1000),
        "RECORD_FLUSH_MS": _int_env("RECORD_FLUSH_MS", 100),
        "RETENTION_DAYS": _int_env("RETENTION_DAYS", 30),
        "RETENTION_MAX_PREDICTIONS": _int_env("RETENTION_MAX_PREDICTIONS", 200_000),
        "LOW_CONFIDENCE_THRESHOLD": _float_env("LOW_CONFIDENCE_THRESHOLD", 0.5),
        "DRIFT_THRESHOLD": _float_env("DRIFT_THRESHOLD", 0.2),
        # The window /metrics reports and /monitoring defaults to.
        "MONITORING_WINDOW": os.environ.get("MONITORING_WINDOW", "24h").strip(),
    }


def check_settings(config) -> None:
    """Fail at start-up, not on the first request, when a setting cannot work."""
    for key in ("MAX_CONTENT_LENGTH", "MAX_IMAGE_PIXELS", "MAX_BATCH_FILES", "TORCH_THREADS",
                "RETENTION_DAYS", "RETENTION_MAX_PREDICTIONS", "RECORD_QUEUE_LIMIT", "RECORD_FLUSH_MS"):
        if int(config[key]) < 1:
            raise ValueError(f"{key} must be at least 1, got {config[key]!r}")
    if config["INFERENCE_ENGINE"] not in ENGINES:
        raise ValueError(f"INFERENCE_ENGINE must be one of {', '.join(ENGINES)}, not {config['INFERENCE_ENGINE']!r}")
    for key in ("LOW_CONFIDENCE_THRESHOLD", "DRIFT_THRESHOLD"):
        if not 0 <= float(config[key]) <= 1:
            raise ValueError(f"{key} must be from 0 to 1, got {config[key]!r}")
    try:
        parse_duration(config["MONITORING_WINDOW"])
    except ValueError as error:
        raise ValueError(f"MONITORING_WINDOW: {error}") from None
    api_key = config.get("API_KEY") or ""
    # Clients send the key in a header, so it must survive one: printable ASCII, no spaces.
    if api_key and (len(api_key) < MIN_API_KEY_LENGTH or not api_key.isascii()
                    or not api_key.isprintable() or " " in api_key):
        raise ValueError(
            f"API_KEY must be at least {MIN_API_KEY_LENGTH} printable ASCII characters "
            "without spaces; make one with "
            "python -c \"import secrets; print(secrets.token_urlsafe(32))\""
        )
