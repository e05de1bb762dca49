"""The web service: ``gunicorn app:app`` serves it, ``flask --app app`` runs its commands.

``create_app`` builds a new app from defaults, the environment and an optional mapping;
the model is loaded here, in each gunicorn worker after it forks, never in the master.
"""

from __future__ import annotations

import logging
import os
import threading

from flask import Flask
from flask_cors import CORS

from classifier.pipeline import Classifier
from web import access_log, metrics, monitoring
from web.api import EXTENSION_KEY, api
from web.cli import register_commands
from web.client_address import ClientAddressFromFront
from web.device import device
from web.errors import register_error_handlers
from web.pages import pages
from web.settings import check_settings, classifier_options, settings_from_env
from web.uploads import InMemoryUploadRequest


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.request_class = InMemoryUploadRequest
    app.wsgi_app = ClientAddressFromFront(app.wsgi_app)
    app.config.from_mapping(settings_from_env())
    if config:
        app.config.from_mapping(config)
    check_settings(app.config)

    # Request id and metrics first, so that their hooks see every request.
    access_log.init_app(app)
    metrics.init_app(app)
    CORS(app, origins=_origins(app.config["CORS_ORIGINS"]), expose_headers=[access_log.REQUEST_ID_HEADER])
    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.register_blueprint(device)
    monitoring.init_app(app)
    register_commands(app)

    if app.config["LOAD_MODEL"]:
        load_classifier(app)
    elif app.config.get("LOAD_MODEL_ON_FIRST_REQUEST"):
        _load_on_first_request(app)
    return app


def load_classifier(app: Flask) -> Classifier:
    """Load and warm up the model; a bad file stops start-up with the reason."""
    classifier = Classifier.setup(app.config["MODEL_PATH"], **classifier_options(app.config))
    # Observed from here on: the warm-up and smoke test are not served inferences.
    classifier.on_inference = metrics.observe_inference
    app.extensions[EXTENSION_KEY] = classifier
    metrics.set_model_info(classifier.model.name, classifier.model.version)
    logging.getLogger(__name__).info(
        "model %s %s loaded in %.2fs (%d classes, %s engine, %d threads; %s)",
        classifier.model.name,
        classifier.model.version,
        classifier.model.load_seconds,
        len(classifier.labels),
        classifier.engine.name,
        app.config["TORCH_THREADS"],
        classifier.engine_reason,
    )
    return classifier


def _load_on_first_request(app: Flask) -> None:
    lock = threading.Lock()

    @app.before_request
    def load_once():
        with lock:
            if EXTENSION_KEY not in app.extensions:
                load_classifier(app)


def _origins(raw: str):
    origins = [origin.strip() for origin in raw.split(",") if origin.strip()]
    return "*" if origins in ([], ["*"]) else origins


def __getattr__(name: str):
    # `gunicorn app:app` and `flask --app app` look up `app` here: build it on first use,
    # so importing this module (tests, tools) loads no model.
    if name == "app":
        globals()["app"] = create_app(_command_line_config())
        return globals()["app"]
    raise AttributeError(name)


def _command_line_config() -> dict | None:
    # `flask --app app <command>` builds the app too (Flask sets FLASK_RUN_FROM_CLI). Its
    # model commands must work while the served file is broken, which is exactly when
    # swap-model is needed, so there the model loads on the first request (`flask run`).
    if os.environ.get("FLASK_RUN_FROM_CLI") == "true":
        return {"LOAD_MODEL": False, "LOAD_MODEL_ON_FIRST_REQUEST": True}
    return None
