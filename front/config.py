"""The values config/nginx.conf.template is filled in with: settings, paths and error bodies.

Values only: what nginx does with them is written in the template, in nginx's own terms.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from string import Template

from web.errors import ERRORS, error_body, message, retry_after

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config" / "nginx.conf.template"
# The settings the template names that are written as they are.
AS_THEY_ARE = ("NGINX_WORKERS", "PORT", "CLIENT_TIMEOUT", "MAX_UPLOAD_MB", "CONNECTION_LIMIT")
# nginx's file descriptors per worker, at most: half for clients, half for gunicorn and files.
OPEN_FILES = 8192


class CannotStart(Exception):
    """The front cannot start: nginx is missing, or cannot take its configuration; the message says why."""


class NginxTemplate(Template):
    """string.Template with %{name} placeholders: $name is nginx's own variable syntax."""

    delimiter = "%"


def render(settings: dict, run_dir: Path, files_root: Path, app_root: Path = ROOT) -> str:
    """The nginx configuration for ``settings`` (web/settings.py's ``read_settings``).

    ``files_root``: where nginx reads ``app_root``'s static files and model copy (front/files.py).
    """
    paths = {"run_dir": run_dir, "app_root": app_root.resolve(), "files_root": files_root.resolve(),
             "config_dir": TEMPLATE.parent}
    for path in paths.values():
        if any(character.isspace() or character in ";'\"{}$#" for character in str(path)):
            raise CannotStart(f"nginx's configuration cannot name {path}: move it to a plainer path")
    address, burst = settings["LISTEN_ADDRESS"], settings["RATE_LIMIT_BURST"]
    values = {
        **paths,
        **{name: settings[name] for name in AS_THEY_ARE},
        "RATE_LIMIT": f"{settings['RATE_LIMIT']:g}",
        "CORS_ORIGINS": ",".join(settings["CORS_ORIGINS"]),
        "trusted_proxies": " ".join(f"{network} 1;" for network in settings["TRUSTED_PROXIES"]),
        "listen_address": f"[{address}]" if ":" in address else address,
        "open_files": open_files(),
        "worker_connections": open_files() // 2,
        "answer_timeout": settings["GUNICORN_TIMEOUT"] + 5,
        # nginx refuses a rate or a connection limit of 0 (the template's maps turn 0 off
        # instead), and burst=0: no burst parameter is none.
        "requests_per_minute": max(1, round(settings["RATE_LIMIT"] * 60)),
        "connection_limit": max(1, settings["CONNECTION_LIMIT"]),
        "burst": f"burst={burst}" if burst else "",
        "retry_after": retry_after(settings),
        **{code: _nginx_string(_json_error(code, settings)) for code in ERRORS},
    }
    return NginxTemplate(TEMPLATE.read_text()).substitute(values)


def open_files() -> int:
    """OPEN_FILES, or the hard limit where that is lower (bin/start-nginx raises the soft one)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)


def _json_error(code: str, settings: dict) -> str:
    return json.dumps(error_body(code, message(code, settings)), separators=(",", ":")) + "\n"


def _nginx_string(text: str) -> str:
    """``text`` as one quoted nginx string; a $ would name a variable, so none may be in it."""
    if "$" in text:
        raise ValueError(f"nginx cannot send a $ in {text!r}")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
