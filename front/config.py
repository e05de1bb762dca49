"""The front's settings, from the environment, and the one nginx configuration they render.

Every setting has its default here and is checked when the front starts: a bad value stops
it with the reason before anything listens. The app's own settings that nginx must agree
with (MAX_UPLOAD_MB, CORS_ORIGINS, GUNICORN_TIMEOUT) are read under the same names.
"""

from __future__ import annotations

import grp
import ipaddress
import json
import math
import os
import pwd
import resource
from dataclasses import dataclass
from pathlib import Path
from string import Template

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

# The API's JSON error for every error nginx answers itself: (status, code, message).
# Keyed by the status nginx raises; 494 is nginx's own "request header too large".
NGINX_ERRORS = {
    400: (400, "bad_request", "The request is not valid HTTP. Send a well-formed request."),
    404: (404, "not_found", "No such route or file. GET /openapi.json lists the routes of this API."),
    405: (405, "method_not_allowed", "This route does not accept that method."),
    408: (408, "request_timeout",
          "The request stopped arriving: nothing came for {client_timeout} s. Send the whole body without pausing."),
    413: (413, "payload_too_large", "The upload is larger than the limit of {max_upload_mb} MB. Send a smaller file."),
    414: (414, "uri_too_long", "The URL is too long. Send parameters in the body."),
    429: (429, "rate_limited",
          "Too many requests from your address: at most {rate_limit} a second (bursts of {burst}) and "
          "{connection_limit} at a time. Wait {retry_after} s (Retry-After) and try again."),
    494: (400, "request_header_too_large", "The request headers are too large. Send smaller headers."),
    500: (500, "internal_error", "The server failed; the error is logged."),
    502: (502, "bad_gateway", "The classifier is restarting. Try again in a few seconds."),
    503: (503, "service_unavailable", "The classifier is restarting. Try again in a few seconds."),
    504: (504, "gateway_timeout", "The classifier took too long to answer. Try again, or send a smaller image."),
}


# Raised while the request line or headers are read, when there is no URI yet: error_page
# cannot go to a named location then, only to a URI.
ERRORS_BEFORE_A_URI = (400, 414, 494)


class FrontSettingError(ValueError):
    """A setting the front cannot start with; the message names it and says what it takes."""


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
        env = os.environ if environ is None else environ
        settings = cls(
            port=_int(env, "PORT", None),
            listen_address=env.get("LISTEN_ADDRESS", "").strip() or "0.0.0.0",
            rate_limit=_number(env, "RATE_LIMIT", 10),
            rate_limit_burst=_int(env, "RATE_LIMIT_BURST", 20),
            connection_limit=_int(env, "CONNECTION_LIMIT", 10),
            client_timeout=_int(env, "CLIENT_TIMEOUT", 30),
            trusted_proxies=_trusted_proxies(env),
            max_upload_mb=_int(env, "MAX_UPLOAD_MB", 20),
            cors_origins=cors_origins(env.get("CORS_ORIGINS", "*")),
            app_timeout=_int(env, "GUNICORN_TIMEOUT", 30),
            nginx_workers=_int(env, "NGINX_WORKERS", 2),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise FrontSettingError(f"PORT must be a TCP port (1-65535), not {self.port}")
        try:
            ipaddress.ip_address(self.listen_address)
        except ValueError:
            raise FrontSettingError(f"LISTEN_ADDRESS must be an IP address, not {self.listen_address!r}") from None
        for name, value, least in [
            ("RATE_LIMIT", self.rate_limit, 0), ("RATE_LIMIT_BURST", self.rate_limit_burst, 0),
            ("CONNECTION_LIMIT", self.connection_limit, 0), ("CLIENT_TIMEOUT", self.client_timeout, 1),
            ("MAX_UPLOAD_MB", self.max_upload_mb, 1), ("GUNICORN_TIMEOUT", self.app_timeout, 1),
            ("NGINX_WORKERS", self.nginx_workers, 1),
        ]:
            if value < least:
                raise FrontSettingError(f"{name} must be at least {least}, got {value}")
        if 0 < self.rate_limit < 1 / 60:
            raise FrontSettingError(f"RATE_LIMIT must be 0 (off) or at least one a minute (0.017), got {self.rate_limit}")

    @property
    def retry_after(self) -> int:
        """Seconds after which a client over the rate limit may send again."""
        return max(1, math.ceil(1 / self.rate_limit)) if self.rate_limit else 1


def _int(env, name: str, default: int | None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        if default is None:
            raise FrontSettingError(f"{name} is not set; the platform sets it to the port to listen on")
        return default
    try:
        return int(raw)
    except ValueError:
        raise FrontSettingError(f"{name} must be an integer, not {raw!r}") from None


def _number(env, name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise FrontSettingError(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise FrontSettingError(f"{name} must be a finite number, not {raw!r}")
    return value


def _trusted_proxies(env) -> tuple[str, ...]:
    """TRUSTED_PROXIES, or where unset: every peer on a dyno (only the router reaches one), none elsewhere."""
    raw = env.get("TRUSTED_PROXIES")
    if raw is None:
        return ("0.0.0.0/0", "::/0") if env.get("DYNO") else ()
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise FrontSettingError(
                f"TRUSTED_PROXIES must be comma-separated addresses or networks (10.0.0.0/8), not {item!r}"
            ) from None
    return tuple(networks)


def cors_origins(raw: str) -> tuple[str, ...]:
    """CORS_ORIGINS as the app and nginx both read it: ("*",) for any, else each origin."""
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    return ("*",) if origins in ((), ("*",)) else origins


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
    fields = {
        "client_timeout": settings.client_timeout,
        "max_upload_mb": settings.max_upload_mb,
        "rate_limit": f"{settings.rate_limit:g}" if settings.rate_limit else "any number",
        "burst": settings.rate_limit_burst,
        "connection_limit": settings.connection_limit or "any number",
        "retry_after": settings.retry_after,
    }
    blocks = []
    for raised, (status, code, message) in NGINX_ERRORS.items():
        body = json.dumps({"error": {"code": code, "message": message.format(**fields)}}, separators=(",", ":"))
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
