"""The optional API key: with API_KEY set, the prediction routes need it, others stay open."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, request

from .errors import ApiError


def api_key_required(view):
    """Answer 401 unless the request carries API_KEY (when one is configured)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        expected = current_app.config.get("API_KEY") or ""
        if expected and not _all_match(presented_keys(), expected):
            raise ApiError("unauthorized", headers={"WWW-Authenticate": 'Bearer realm="predict"'})
        return view(*args, **kwargs)

    return guarded


def presented_keys() -> list[str]:
    """Every credential the request carries: ``Authorization: Bearer <key>``, ``X-API-Key``.

    An Authorization header of another scheme counts as a wrong key, not as no key.
    """
    keys = []
    if "Authorization" in request.headers:
        scheme, _, credentials = request.headers["Authorization"].partition(" ")
        keys.append(credentials.strip() if scheme.lower() == "bearer" else "")
    if "X-API-Key" in request.headers:
        keys.append(request.headers["X-API-Key"].strip())
    return keys


def _all_match(presented: list[str], expected: str) -> bool:
    # A wrong key is never overlooked because a right one came along in the other header.
    return bool(presented) and all(_matches(key, expected) for key in presented)


def _matches(presented: str, expected: str) -> bool:
    # compare_digest takes as long whatever the first differing byte: no timing oracle.
    # Header values reach WSGI as latin-1 text; encoding them back gives the bytes sent.
    return hmac.compare_digest(
        presented.encode("latin-1", "replace"), expected.encode("latin-1", "replace")
    )
