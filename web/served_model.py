"""The served model's life in the app, as flaskr's db.py is its database's: one home.

- ``init_app`` loads it when the app is built (each gunicorn worker, after the fork), or,
  for ``flask --app app`` (``when_run_from_flask_cli``), on the first request;
- ``get_classifier`` gives it to a view, or raises ``ModelNotReady``, which every route
  answers with the same 503 ``model_not_ready``; ``loaded_classifier`` is for the routes
  that answer without it (/health, /openapi.json);
- ``classifier_for_command`` is what the ``predict`` command runs, and ``setup_options`` the
  settings that workers, commands and Ray actors all load it with.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, current_app

from classifier.pipeline import Classifier

from . import telemetry
from .settings import read_runtime

EXTENSION_KEY = "classifier"

log = logging.getLogger(__name__)


class ModelNotReady(Exception):
    """A route that needs the model was called before it finished loading (503 model_not_ready)."""


def init_app(app: Flask) -> None:
    if app.config["LOAD_MODEL"]:
        load(app)
    elif app.config.get("LOAD_MODEL_ON_FIRST_REQUEST"):
        lock = threading.Lock()

        @app.before_request
        def load_once():
            with lock:
                if EXTENSION_KEY not in app.extensions:
                    load(app)


def when_run_from_flask_cli() -> dict | None:
    """The settings for an app that ``flask --app app <command>`` builds (it sets FLASK_RUN_FROM_CLI).

    The model commands must work while the served file is broken, which is exactly when
    swap-model is needed, so there the model loads on the first request (``flask run``).
    """
    if read_runtime().run_from_flask_cli:
        return {"LOAD_MODEL": False, "LOAD_MODEL_ON_FIRST_REQUEST": True}
    return None


def load(app: Flask) -> Classifier:
    """Load, check and warm up the model; a bad file stops start-up with the reason."""
    classifier = Classifier.setup(app.config["MODEL_PATH"], **setup_options(app.config))
    # Observed from here on: the warm-up and smoke test are not served inferences.
    classifier.on_inference = telemetry.observe_inference
    app.extensions[EXTENSION_KEY] = classifier
    telemetry.set_model_info(classifier.model.name, classifier.model.version)
    log.info(
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


def get_classifier() -> Classifier:
    """The app's model; ``ModelNotReady`` until it is loaded."""
    classifier = loaded_classifier()
    if classifier is None:
        raise ModelNotReady()
    return classifier


def loaded_classifier() -> Classifier | None:
    return current_app.extensions.get(EXTENSION_KEY)


def classifier_for_command() -> Classifier:
    """The model for a command; ``flask --app app`` builds the app without loading it.

    One thread for the engine: the ``predict`` command runs one forward pass per core side
    by side.
    """
    classifier = loaded_classifier()
    if classifier is None:
        classifier = Classifier.setup(current_app.config["MODEL_PATH"], **setup_options(current_app.config, threads=1))
        current_app.extensions[EXTENSION_KEY] = classifier
    return classifier


def setup_options(config, threads: int | None = None) -> dict:
    """The settings ``Classifier.setup`` takes, from the app's config."""
    return {
        "max_pixels": config["MAX_IMAGE_PIXELS"],
        "threads": threads or config["TORCH_THREADS"],
        "engine": config["INFERENCE_ENGINE"],
        "onnx_path": config["ONNX_MODEL_PATH"] or None,
    }
