"""The optional API key: with API_KEY set, the prediction routes need it, others stay open."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, request

from .errors import error_response


def api_key_required(view):
    """Answer 401 unless the request carries API_KEY (when one is configured)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        expected = current_app.config.get("API_KEY") or ""
        if expected and not _matches(presented_key(), expected):
            response = error_response(
                401,
                "unauthorized",
                "This API needs a key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="predict"'
            return response
        return view(*args, **kwargs)

    return guarded


def presented_key() -> str:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; empty if none."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("X-API-Key", "").strip()


def _matches(presented: str, expected: str) -> bool:
    # compare_digest takes as long whatever the first differing byte: no timing oracle.
    # Header values reach WSGI as latin-1 text; encoding them back gives the bytes sent.
    return hmac.compare_digest(
        presented.encode("latin-1", "replace"), expected.encode("latin-1", "replace")
    )
