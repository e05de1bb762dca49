"""The web service: ``gunicorn 'app:create_app()'`` serves it, ``flask --app app`` runs its commands.

``create_app`` builds a new app from defaults, the environment and an optional mapping;
the model is loaded in each gunicorn worker after it forks, never in the master
(web/served_model.py). Importing this module builds nothing.
"""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from web import api_spec, monitoring, served_model, telemetry
from web.api import MODEL_VERSION_HEADER, InMemoryUploadRequest, api
from web.cli import register_commands
from web.device import device
from web.errors import register_error_handlers
from web.inference_protocol import inference_protocol
from web.pages import pages
from web.settings import BY_NAME, MEGABYTE, read_runtime, read_settings


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.request_class = InMemoryUploadRequest
    if read_runtime().app_socket:  # behind the front: only nginx reaches the socket, and names the client
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)
    # `flask --app app` calls this with no mapping: its commands load the model only when needed.
    config = config if config is not None else served_model.when_run_from_flask_cli() or {}
    settings = read_settings(overrides=config)
    app.config.from_mapping(settings, MAX_CONTENT_LENGTH=settings["MAX_UPLOAD_MB"] * MEGABYTE, LOAD_MODEL=True)
    # What is not a setting: Flask's own keys (TESTING, MAX_CONTENT_LENGTH in bytes), LOAD_MODEL.
    app.config.from_mapping({key: value for key, value in config.items() if key not in BY_NAME})

    # The request id, access line and metrics first, so that their hooks see every request.
    telemetry.init_app(app)
    # Read as the front reads it (web/settings.py), so that nginx's own answers and the app's allow the same origins.
    origins = app.config["CORS_ORIGINS"]
    CORS(app, origins="*" if origins == ("*",) else list(origins),
         expose_headers=[telemetry.REQUEST_ID_HEADER, MODEL_VERSION_HEADER])
    monitoring.init_app(app)
    register_commands(app)
    served_model.init_app(app)
    # The routes, after the model: the OpenAPI document lists its classes (web/api_spec.py).
    api_spec.init_app(app, [api, inference_protocol, pages, device, monitoring.monitoring, telemetry.metrics])
    register_error_handlers(app)  # after flask-smorest's, which it replaces
    return app
