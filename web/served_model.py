"""The served model's life in the app, as flaskr's db.py is its database's: one home.

- ``init_app`` loads it when the app is built (each gunicorn worker, after the fork), or,
  for ``flask --app app`` (``when_run_from_flask_cli``), on the first request;
- ``get_classifier`` gives it to a view, or raises ``ModelNotReady``, which every route
  answers with the same 503 ``model_not_ready``; ``loaded_classifier`` is for the routes
  that answer without it (/health, /openapi.json);
- ``classifier_for_command`` is what the ``predict`` command runs, and ``setup_options`` the
  settings that workers, commands and Ray actors all load it with;
- a candidate model (``CANDIDATE_MODEL_PATH``) is loaded beside it by the same rules, and
  ``models_for_request`` says which model answers a request and which shadows it
  (docs/model.md, "A candidate model").
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from pathlib import Path

from flask import Flask, current_app, request

from classifier.errors import ModelContractError
from classifier.pipeline import Classifier

from . import telemetry
from .settings import read_runtime

EXTENSION_KEY = "classifier"
CANDIDATE_KEY = "candidate"
CLIENT_ID_HEADER = "X-Client-ID"

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
    """Load, check and warm up the model and any candidate; a bad file stops start-up with the reason."""
    classifier = _setup("model", app.config["MODEL_PATH"], app.config)
    # Observed from here on: the warm-up and smoke test are not served inferences.
    classifier.on_inference = telemetry.observe_inference
    app.extensions[CANDIDATE_KEY] = load_candidate(app.config, classifier)
    app.extensions[EXTENSION_KEY] = classifier
    telemetry.set_model_info(classifier.model.name, classifier.model.version)
    return classifier


def _setup(role: str, path, config, onnx_path: str | None = None) -> Classifier:
    classifier = Classifier.setup(path, **setup_options(config, onnx_path=onnx_path))
    model = classifier.model
    log.info("%s %s %s loaded in %.2fs (%d classes, %s engine, %d threads; %s)", role, model.name,
             model.version, model.load_seconds, len(classifier.labels), classifier.engine.name,
             config["TORCH_THREADS"], classifier.engine_reason)
    return classifier


def load_candidate(config, served: Classifier) -> Classifier | None:
    """The candidate, loaded as the served model is (its own ONNX copy); None when there is none.

    The file is the switch: ``flask --app app promote`` moves it into MODEL_PATH's place, and
    the workers it reloads find no candidate, with no setting to change.
    """
    path = config["CANDIDATE_MODEL_PATH"]
    if not path or not Path(path).is_file():
        if path:
            log.warning("no candidate model: CANDIDATE_MODEL_PATH %s does not exist", path)
        return None
    candidate = _setup("candidate", path, config, candidate_onnx_path(config))
    if (candidate.model.name, candidate.model.version) == (served.model.name, served.model.version):
        raise ModelContractError(
            f"CANDIDATE_MODEL_PATH {path} is {served.model.name} {served.model.version}, the model "
            "MODEL_PATH serves: a candidate needs a version of its own (export it with another "
            "model_version), or unset CANDIDATE_MODEL_PATH.")
    return candidate


def candidate_onnx_path(config) -> str:
    """The candidate's ONNX copy: its name with .onnx, beside it; none when the served model has none."""
    return str(Path(config["CANDIDATE_MODEL_PATH"]).with_suffix(".onnx")) if config["ONNX_MODEL_PATH"] else ""


def loaded_candidate() -> Classifier | None:
    return current_app.extensions.get(CANDIDATE_KEY)


def models_for_request() -> tuple[Classifier, Classifier | None]:
    """The model that answers this request, and the one that shadows it (None: none does).

    The candidate takes CANDIDATE_SHARE of the requests: in canary mode it answers them, in
    shadow mode it classifies them too, after the served model's answer.
    """
    served, candidate, config = get_classifier(), loaded_candidate(), current_app.config
    canary = config["CANDIDATE_MODE"] == "canary"
    client_id = canary and request.headers.get(CLIENT_ID_HEADER)
    if candidate is None or not _drawn(config["CANDIDATE_SHARE"], client_id):
        return served, None
    return (candidate, None) if canary else (served, candidate)


def _drawn(share: float, client_id: str | None) -> bool:
    if client_id:  # the same client gets the same model from every worker: not Python's per-process hash()
        digest = hashlib.sha256(client_id.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") < share * 2**64
    return random.random() < share


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


def setup_options(config, threads: int | None = None, onnx_path: str | None = None) -> dict:
    """The settings ``Classifier.setup`` takes, from the app's config (``onnx_path``: another model's)."""
    return {
        "max_pixels": config["MAX_IMAGE_PIXELS"],
        "threads": threads or config["TORCH_THREADS"],
        "engine": config["INFERENCE_ENGINE"],
        "onnx_path": (config["ONNX_MODEL_PATH"] if onnx_path is None else onnx_path) or None,
    }
