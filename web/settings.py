"""Every setting a user can set, in one table: its name, default, type, check and meaning.

The app (``create_app``), gunicorn.conf.py and the front (bin/start-nginx) all read their
settings here, from the environment, once at start. A bad value stops the start with one
``SettingError`` that names the setting and says what it takes. The README's configuration
table and app.json list the same settings with the same defaults (tests/test_settings.py).

Standard library only: the front reads this before, and beside, the app.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

MEGABYTE = 1024 * 1024
# Short keys can be guessed; `python -c "import secrets; print(secrets.token_urlsafe(32))"`.
MIN_API_KEY_LENGTH = 16
ENGINES = ("auto", "onnxruntime", "torchscript")
CANDIDATE_MODES = ("shadow", "canary")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DURATION_PATTERN = re.compile(r"([0-9]{1,7})([smhd])")
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 3650 * 86400  # ten years: any window longer is a mistake


class SettingError(ValueError):
    """A setting that cannot work; the message names it and says what it takes."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any  # when unset or blank; a callable is given the settings read before it, and the environment
    read: Callable[[Any], Any]  # text (or an already typed value) -> value; ValueError says what it takes
    help: str  # what it does, for people: the README's and app.json's tables say the same
    blank_is_a_value: bool = False  # set but empty means something of its own (TRUSTED_PROXIES)
    set_by_platform: bool = False  # the platform sets it (PORT): app.json must not


def integer(least: int = 0, most: int | None = None) -> Callable[[Any], int]:
    def read(value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.fullmatch(r"-?[0-9]+", str(value).strip()):
            raise ValueError(f"an integer of at least {least}")
        number = int(str(value).strip())
        if number < least or (most is not None and number > most):
            raise ValueError(f"an integer from {least} to {most}" if most is not None else f"at least {least}")
        return number
    return read


def number(least: float, most: float | None = None) -> Callable[[Any], float]:
    def read(value) -> float:
        try:
            result = float(value)
        except (TypeError, ValueError):
            raise ValueError("a number") from None
        if isinstance(value, bool) or not math.isfinite(result) or result < least or (most is not None and result > most):
            raise ValueError(f"a number from {least:g} to {most:g}" if most is not None else f"at least {least:g}")
        return result
    return read


def flag(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("1 or 0 (true or false)")


def text(value) -> str:
    return str(value).strip()


def choice(*options: str) -> Callable[[Any], str]:
    def read(value) -> str:
        chosen = str(value).strip().lower()
        if chosen not in options:
            raise ValueError(f"one of {', '.join(options)}")
        return chosen
    return read


def rate(value) -> float:
    per_second = number(0)(value)
    if 0 < per_second < 1 / 60:
        raise ValueError("0 (off) or at least one a minute (0.017)")
    return per_second


def parse_duration(raw: str) -> int:
    """Seconds in a duration such as ``90s``, ``15m``, ``24h`` or ``7d``; ValueError otherwise."""
    match = DURATION_PATTERN.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"a duration is a whole number and a unit (s, m, h or d), such as 24h; not {raw!r}")
    seconds = int(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{raw!r} is longer than the longest window, {MAX_DURATION_S // 86400}d")
    return seconds


def duration(value) -> str:
    parse_duration(value)
    return value.strip()


def ip_address(value) -> str:
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise ValueError("an IP address, such as 0.0.0.0 or ::") from None


def origins(value) -> tuple[str, ...]:
    """CORS_ORIGINS as the app and nginx both read it: ("*",) for any, else each origin."""
    if isinstance(value, tuple):
        return value
    found = tuple(origin.strip().rstrip("/") for origin in str(value).split(",") if origin.strip())
    if any(any(c.isspace() or c in "\"'$;{}\\" for c in origin) for origin in found):
        raise ValueError("comma-separated origins such as https://example.com, or *")
    return ("*",) if found in ((), ("*",)) else found


def networks(value) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    try:
        return tuple(str(ipaddress.ip_network(item.strip(), strict=False)) for item in str(value).split(",") if item.strip())
    except ValueError:
        raise ValueError("comma-separated addresses or networks, such as 10.0.0.0/8") from None


def api_key(value) -> str:
    key = str(value).strip()
    # Clients send the key in a header, so it must survive one: printable ASCII, no spaces.
    if key and (len(key) < MIN_API_KEY_LENGTH or not key.isascii() or not key.isprintable() or " " in key):
        raise ValueError(f"at least {MIN_API_KEY_LENGTH} printable ASCII characters without spaces; make one with "
                         "python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
    return key


def _threads_per_worker(values: Mapping, environ: Mapping) -> int:
    """Split the cores between gunicorn's workers so they do not fight over them."""
    return max(1, (os.cpu_count() or 1) // values["WEB_CONCURRENCY"])


def _trusted_by_default(values: Mapping, environ: Mapping) -> tuple[str, ...]:
    # On a dyno only the platform's router reaches the process (DYNO is the platform's own variable).
    return ("0.0.0.0/0", "::/0") if environ.get("DYNO") else ()


SETTINGS: tuple[Setting, ...] = (
    # The model
    Setting("MODEL_PATH", "model.zip", text, "The TorchScript model file to serve (docs/model.md#the-model-file)."),
    Setting("INFERENCE_ENGINE", "auto", choice(*ENGINES),
            "What runs the model: auto (ONNX Runtime on ONNX_MODEL_PATH when it is a verified copy of MODEL_PATH, "
            "else TorchScript), onnxruntime (insist) or torchscript."),
    Setting("ONNX_MODEL_PATH", "model.onnx", text,
            "The ONNX copy of MODEL_PATH that ONNX Runtime serves (made by make variants); empty: TorchScript only."),
    Setting("DEVICE_MODEL_PATH", "model-browser.onnx", text,
            "The ONNX form the page's 'On this device' switch runs in the browser, made by make variants "
            "(it publishes the weights); empty: no switch."),
    # A candidate model beside the served one (docs/model.md#a-candidate-model-shadow-and-canary)
    Setting("CANDIDATE_MODEL_PATH", "", text,
            "A second model file tried on live traffic beside MODEL_PATH (its ONNX copy: the same name "
            "with .onnx); unset, or no such file: no candidate."),
    Setting("CANDIDATE_MODE", "shadow", choice(*CANDIDATE_MODES),
            "shadow: the candidate also classifies CANDIDATE_SHARE of requests, the served model answers; "
            "canary: the candidate answers that share."),
    Setting("CANDIDATE_SHARE", 0.1, number(0, 1),
            "The share of requests (0-1) the candidate classifies; in canary mode a request with X-Client-ID "
            "gets the same model every time."),
    # Processes
    Setting("PORT", 8000, integer(1, 65535), "The port nginx listens on (the platform sets it).", set_by_platform=True),
    Setting("LISTEN_ADDRESS", "0.0.0.0", ip_address, "The address nginx listens on, at PORT; 0.0.0.0: every interface."),
    Setting("WEB_CONCURRENCY", 2, integer(1), "gunicorn worker processes; each loads its own copy of the model."),
    Setting("TORCH_THREADS", _threads_per_worker, integer(1),
            "Inference threads per worker; unset, the cores are split between the workers."),
    Setting("GUNICORN_TIMEOUT", 30, integer(1),
            "Seconds before gunicorn restarts a silent worker; nginx waits 5 s longer for an answer, then answers 504."),
    Setting("MAX_REQUESTS", 20000, integer(0), "Requests after which a worker is recycled (with 10% jitter); 0: never."),
    Setting("LOG_LEVEL", "info", choice(*LOG_LEVELS), "gunicorn's and the app's log level."),
    Setting("NGINX_WORKERS", 2, integer(1), "nginx worker processes; each serves thousands of connections."),
    Setting("NGINX_BINARY", "", text, "The nginx to run; unset, the one on PATH or where Debian and the apt buildpack put it."),
    Setting("PROMETHEUS_MULTIPROC_DIR", "", text,
            "Where the workers keep their /metrics numbers; unset, a fresh temporary directory."),
    # Limits
    Setting("MAX_UPLOAD_MB", 20, integer(1), "Largest request body, in MB."),
    Setting("MAX_IMAGE_PIXELS", 50_000_000, integer(1),
            "Largest image (width x height); larger ones are refused before decoding."),
    Setting("MAX_BATCH_FILES", 16, integer(1), "Most images in one POST /predict/batch; more is refused with 413."),
    Setting("RATE_LIMIT", 10.0, rate,
            "Prediction requests a second per client address (docs/front.md), in bursts of up to RATE_LIMIT_BURST "
            "more; over it: 429 rate_limited with Retry-After. 0: no limit."),
    Setting("RATE_LIMIT_BURST", 20, integer(0),
            "Prediction requests a client may send at once beyond RATE_LIMIT before it is refused."),
    Setting("CONNECTION_LIMIT", 10, integer(0),
            "Prediction requests in progress at once per client address; over it: 429 rate_limited. 0: no limit."),
    Setting("CLIENT_TIMEOUT", 30, integer(1),
            "Seconds nginx gives a client to send its headers, and between two reads of its body or two writes of "
            "the answer; then it drops the client."),
    Setting("TRUSTED_PROXIES", _trusted_by_default, networks,
            "Networks (comma-separated) of the router whose last X-Forwarded-For element nginx takes as the "
            "client's address. Unset: any peer on a dyno (DYNO is set; only the router reaches one), none "
            "elsewhere; empty: none.", blank_is_a_value=True),
    # Clients
    Setting("API_KEY", "", api_key,
            "Unset: the prediction routes are open. Set (16+ characters): they need it as "
            "'Authorization: Bearer <key>' or 'X-API-Key'."),
    Setting("CORS_ORIGINS", ("*",), origins, "Comma-separated origins allowed to call the API from a browser, or *."),
    Setting("API_BASE", "", lambda value: text(value).rstrip("/"), "The API the page at / calls; unset, the page's own origin."),
    # Monitoring
    Setting("DATABASE_URL", "", text,
            "Where predictions and feedback are recorded: postgresql://... (the Heroku Postgres add-on sets it; "
            "postgres:// is accepted) or sqlite:///PATH. Unset: SQLite in the instance folder, which a dyno loses "
            "at every restart."),
    Setting("RECORD_PREDICTIONS", True, flag, "1: record every prediction in DATABASE_URL (docs/monitoring.md); 0: do not."),
    Setting("KEEP_IMAGES", False, flag,
            "1: keep the 224x224 copy of every image sent, for retraining (export-feedback). Users' images are then "
            "stored for RETENTION_DAYS: tell them."),
    Setting("RECORD_QUEUE_LIMIT", 1000, integer(1), "Prediction records a worker queues for the database at most."),
    Setting("RECORD_FLUSH_MS", 100, integer(1), "How often a worker writes its queued records, in milliseconds."),
    Setting("RETENTION_DAYS", 30, integer(1), "Days a recorded prediction (and its image) is kept."),
    Setting("RETENTION_MAX_PREDICTIONS", 200_000, integer(1), "Most recorded predictions kept; the oldest go first."),
    Setting("LOW_CONFIDENCE_THRESHOLD", 0.5, number(0, 1), "A score under this counts as a low-confidence answer in /monitoring."),
    Setting("DRIFT_THRESHOLD", 0.2, number(0, 1), "A drift score (0-1) at or over this marks the window as drifting in /monitoring."),
    Setting("MONITORING_WINDOW", "24h", duration,
            "The window /metrics reports the monitoring figures over, and /monitoring's default (e.g. 24h, 7d)."),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}


def default_text(setting: Setting) -> str | None:
    """The default as one would write it in the environment (app.json, the README); None if it is computed."""
    default = setting.default
    if callable(default):
        return None
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def read_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """Every setting, from ``environ`` (default: the process's), then ``overrides``, checked.

    Raises ``SettingError`` for the first value that cannot work.
    """
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            raw = overrides[setting.name]
        else:
            raw = environ.get(setting.name)
            if raw is not None and not raw.strip() and not setting.blank_is_a_value:
                raw = None
        if raw is None:
            default = setting.default
            if callable(default):
                default = default(values, environ)
            values[setting.name] = default
            continue
        try:
            values[setting.name] = setting.read(raw)
        except ValueError as error:
            raise SettingError(f"{setting.name} must be {error}, not {raw!r}") from None
    return values


@dataclass(frozen=True)
class Runtime:
    """What the processes tell each other through the environment: not settings a user sets."""

    app_socket: str  # set by the front: gunicorn binds this unix socket
    ready_file: str  # set by the front: written once every worker has warmed up the model
    run_from_flask_cli: bool  # `flask --app app <command>` sets FLASK_RUN_FROM_CLI


def read_runtime(environ: Mapping[str, str] | None = None) -> Runtime:
    environ = os.environ if environ is None else environ
    return Runtime(
        app_socket=environ.get("APP_SOCKET", ""),
        ready_file=environ.get("APP_READY_FILE", ""),
        run_from_flask_cli=environ.get("FLASK_RUN_FROM_CLI") == "true",
    )
