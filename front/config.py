"""The front's settings, from the environment, and the one nginx configuration they render.

Every setting has its default here and is checked when the front starts: a bad value stops
it with the reason before anything listens. The app's own settings that nginx must agree
with (MAX_UPLOAD_MB, CORS_ORIGINS, GUNICORN_TIMEOUT) are read under the same names.
"""

from __future__ import annotations

import grp
import json
import math
import os
import pwd
import resource
from dataclasses import dataclass
from pathlib import Path
from string import Template

from web.errors import ERRORS, error_body, message
from web.settings import SettingError, read_settings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config" / "nginx.conf.template"
MEGABYTE = 1024 * 1024

# Compressed where it pays: text and WebAssembly shrink well; images and the ONNX weights do
# not, so they are sent as they are (docs/front.md has the figures).
GZIP_TYPES = ("text/css", "text/plain", "application/javascript", "application/json", "application/wasm",
              "image/svg+xml")
# Level 5: higher levels cost nginx more CPU on every send for little more saving (what level 5
# saves on each file: docs/front.md, Measured).
GZIP_LEVEL = 5

# The code of the API's JSON error (web/errors.py) for every error nginx answers itself, keyed
# by the status nginx raises; 494 is nginx's own "request header too large".
NGINX_ERRORS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                413: "payload_too_large", 414: "uri_too_long", 429: "rate_limited", 494: "request_header_too_large",
                500: "internal_error", 502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}


# Raised while the request line or headers are read, when there is no URI yet: error_page
# cannot go to a named location then, only to a URI.
ERRORS_BEFORE_A_URI = (400, 414, 494)


class FrontSettingError(ValueError):
    """The front cannot start: a setting, or nginx refusing its configuration; the message says why."""


@dataclass(frozen=True)
class FrontSettings:
    """Everything the nginx configuration depends on, read from the environment."""

    port: int
    listen_address: str
    rate_limit: float  # requests per second per client address on the prediction routes; 0: off
    rate_limit_burst: int
    connection_limit: int  # prediction requests at once per client address; 0: off
    client_timeout: int  # seconds between two reads from, or writes to, a client
    trusted_proxies: tuple[str, ...]  # peers whose X-Forwarded-For's last element is the client
    max_upload_mb: int
    cors_origins: tuple[str, ...]  # ("*",) for any
    app_timeout: int  # gunicorn's timeout: nginx waits a little longer for an answer
    nginx_workers: int

    @classmethod
    def from_env(cls, environ=None) -> "FrontSettings":
        try:
            values = read_settings(environ)
        except SettingError as error:
            raise FrontSettingError(str(error)) from None
        return cls(
            port=values["PORT"], listen_address=values["LISTEN_ADDRESS"], rate_limit=values["RATE_LIMIT"],
            rate_limit_burst=values["RATE_LIMIT_BURST"], connection_limit=values["CONNECTION_LIMIT"],
            client_timeout=values["CLIENT_TIMEOUT"], trusted_proxies=values["TRUSTED_PROXIES"],
            max_upload_mb=values["MAX_UPLOAD_MB"], cors_origins=values["CORS_ORIGINS"],
            app_timeout=values["GUNICORN_TIMEOUT"], nginx_workers=values["NGINX_WORKERS"],
        )

    @property
    def retry_after(self) -> int:
        """Seconds after which a client over the rate limit may send again."""
        return max(1, math.ceil(1 / self.rate_limit)) if self.rate_limit else 1


# ---------------------------------------------------------------------------------------
# Rendering

class NginxTemplate(Template):
    """string.Template with %{name} placeholders: $name is nginx's own variable syntax."""

    delimiter = "%"


@dataclass(frozen=True)
class RunPaths:
    """Where one running front keeps its files: its private run directory."""

    run_dir: Path

    @property
    def app_socket(self) -> Path:
        return self.run_dir / "app.sock"

    @property
    def ready_file(self) -> Path:
        return self.run_dir / "app-ready"

    @property
    def nginx_conf(self) -> Path:
        return self.run_dir / "nginx.conf"


def render(settings: FrontSettings, paths: RunPaths, app_root: Path = ROOT, nginx_user: str | None = None,
           files_root: Path | None = None) -> str:
    """The nginx configuration for these settings, serving ``app_root``'s static files.

    ``files_root``: where nginx reads them, if not from ``app_root`` itself (front/files.py).
    """
    files_root = (files_root or app_root).resolve()
    for path in (paths.run_dir, app_root.resolve(), files_root):
        if any(character.isspace() or character in ";'\"{}$" for character in str(path)):
            raise FrontSettingError(f"nginx's configuration cannot name {path}: move it to a path without spaces or quotes")
    values = {
        "worker_processes": settings.nginx_workers,
        "user_directive": f"user {nginx_user};" if nginx_user else "# (not root: nginx runs as this user)",
        "run_dir": paths.run_dir,
        "error_log_level": "warn",
        "open_files": open_files(),
        "worker_connections": open_files() // 2,
        "access_log": "/dev/stdout front",
        "client_timeout": settings.client_timeout,
        "max_body_bytes": settings.max_upload_mb * MEGABYTE,
        "real_ip_directives": _real_ip(settings),
        "rate_limit_zone": _indent(1, _rate_limit_zone(settings)),
        "gzip_level": GZIP_LEVEL,
        "gzip_types": " ".join(GZIP_TYPES),
        "cors_map": _indent(2, _cors_map(settings)),
        "app_socket": paths.app_socket,
        "listen_address": _listen(settings.listen_address),
        "port": settings.port,
        "backlog": 1024,
        "app_timeout": settings.app_timeout + 5,
        "error_pages": _indent(2, _error_pages(settings)),
        "proxy_headers": _indent(3, _proxy_headers()),
        "model_copy_proxy_headers": _indent(3, _proxy_headers(hand_over_files_in=app_root.resolve())),
        "prediction_limits": _indent(3, _prediction_limits(settings)),
        "files_root": files_root,
    }
    return NginxTemplate(TEMPLATE.read_text()).substitute(values)


# nginx's file descriptors per worker, at most: half for clients, half for gunicorn and files.
OPEN_FILES = 8192


def open_files() -> int:
    """OPEN_FILES, or the hard limit where that is lower (bin/start-nginx raises the soft one)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)


def nginx_user_when_root(app_root: Path = ROOT) -> str | None:
    """Started as root, nginx's workers run as the app's owner, or nobody: never as root."""
    if os.geteuid() != 0:
        return None
    owner = app_root.stat().st_uid
    try:
        user = pwd.getpwuid(owner) if owner != 0 else pwd.getpwnam("nobody")
    except KeyError:
        user = pwd.getpwnam("nobody")
    return f"{user.pw_name} {grp.getgrgid(user.pw_gid).gr_name}"


def _listen(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _real_ip(settings: FrontSettings) -> str:
    if not settings.trusted_proxies:
        return ("    # TRUSTED_PROXIES is empty: the client is the peer; X-Forwarded-For is not believed.\n"
                "    map $scheme $front_forwarded_proto { default $scheme; }")
    lines = ["    # The platform's router appends the address it got the connection from to",
             "    # X-Forwarded-For; only that last element, from a trusted peer, is the client.",
             "    # Whatever a client writes there itself comes before it (docs/front.md)."]
    lines += [f"    set_real_ip_from {network};" for network in settings.trusted_proxies]
    lines += ["    real_ip_header X-Forwarded-For;", "    real_ip_recursive off;",
              "    map $http_x_forwarded_proto $front_forwarded_proto { default $http_x_forwarded_proto; \"\" $scheme; }"]
    return "\n".join(lines)


def _rate_limit_zone(settings: FrontSettings) -> str:
    if not settings.rate_limit:
        return "# RATE_LIMIT=0: no request rate limit."
    per_second = settings.rate_limit
    rate = f"{int(per_second)}r/s" if per_second == int(per_second) else f"{max(1, round(per_second * 60))}r/m"
    return f"limit_req_zone $binary_remote_addr zone=predictions:10m rate={rate};"


def _prediction_limits(settings: FrontSettings) -> str:
    lines = []
    if settings.rate_limit:
        burst = f" burst={settings.rate_limit_burst}" if settings.rate_limit_burst else ""  # nginx refuses burst=0
        lines.append(f"limit_req zone=predictions{burst} nodelay;")
    if settings.connection_limit:
        lines.append(f"limit_conn prediction_connections {settings.connection_limit};")
    return "\n".join(lines) or "# RATE_LIMIT=0 and CONNECTION_LIMIT=0: no per-client limits."


def _proxy_headers(hand_over_files_in: Path | None = None) -> str:
    # Repeated in each location that proxies: nginx inherits proxy_set_header only into a
    # location that sets none of its own.
    if hand_over_files_in:
        # The app may answer with X-Accel-Redirect for a file in this directory (web/device.py).
        sendfile = ["proxy_set_header X-Sendfile-Type X-Accel-Redirect;",
                    f"proxy_set_header X-Accel-Mapping {hand_over_files_in}/=/_front/app-files/;"]
    else:
        # Only nginx may ask the app to hand it a file; a client's own headers are dropped.
        sendfile = ['proxy_set_header X-Sendfile-Type "";', 'proxy_set_header X-Accel-Mapping "";']
    return "\n".join([
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $http_host;",
        # The client as nginx determined it (the router's last hop, or the peer): one element,
        # so the app never sees what a client wrote there itself.
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $front_forwarded_proto;",
        *sendfile,
    ])


def _cors_map(settings: FrontSettings) -> str:
    if settings.cors_origins == ("*",):
        return 'default "*";'
    lines = ['default "";']
    lines += [f'"{origin}" $http_origin;' for origin in settings.cors_origins if '"' not in origin]
    return "\n".join(lines)


def _error_pages(settings: FrontSettings) -> str:
    """error_page and one internal location per status: the API's JSON, never nginx's HTML."""
    fields = {"CLIENT_TIMEOUT": settings.client_timeout, "MAX_UPLOAD_MB": settings.max_upload_mb,
              "RATE_LIMIT": settings.rate_limit, "RATE_LIMIT_BURST": settings.rate_limit_burst,
              "CONNECTION_LIMIT": settings.connection_limit}
    blocks = []
    for raised, code in NGINX_ERRORS.items():
        status = ERRORS[code].status
        body = json.dumps(error_body(code, message(code, fields)), separators=(",", ":"))
        if "$" in body or "'" in body or "\\" in body:
            raise AssertionError(f"the {code} message cannot be quoted in nginx's config: {body}")
        answer = f"={status} " if status != raised else ""
        if raised in ERRORS_BEFORE_A_URI:
            location, internal = f"/_front/errors/{raised}", "    internal;\n"
        else:
            # A named location: after an internal redirect to a URI, nginx answers a client
            # that has already closed its side (a body over the limit) with its HTML page.
            location, internal = f"@front_error_{raised}", ""
        headers = [
            "add_header Access-Control-Allow-Origin $cors_allow_origin always;",
            'add_header Access-Control-Expose-Headers "Retry-After" always;',
            "add_header Vary Origin always;",
            'add_header Cache-Control "no-store" always;',
        ]
        if status == 429:
            headers.append(f"add_header Retry-After {settings.retry_after} always;")
        if status == 405:
            headers.append('add_header Allow "GET, HEAD" always;')
        blocks.append(f"error_page {raised} {answer}{location};")
        blocks.append(
            # types {} so that the request's own extension (.js) does not set the type.
            f"location {'= ' if internal else ''}{location} {{\n{internal}    types {{ }}\n    default_type application/json;\n"
            + "".join(f"    {header}\n" for header in headers)
            # The status sent is error_page's (the error's own, or its =status), whatever
            # this return says.
            + f"    return 200 '{body}\\n';\n}}"
        )
    return "\n".join(blocks)


def _indent(level: int, text: str) -> str:
    pad = "    " * level
    return "\n".join(pad + line if line else line for line in text.splitlines())
