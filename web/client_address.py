"""The client's address behind the front, for the access log and anything else that asks.

nginx (the front, front/start.py) reaches gunicorn over a unix socket in a private
directory, so gunicorn sees no peer address (REMOTE_ADDR is empty). nginx sends the client
it determined as the one element of X-Forwarded-For (config/nginx.conf.template), and only
nginx can connect there, so on such a connection that element is believed. A TCP peer
(gunicorn serving clients itself) keeps its own address: its header could say anything.
"""

from __future__ import annotations


class ClientAddressFromFront:
    """WSGI middleware: REMOTE_ADDR from the front's X-Forwarded-For on a unix socket."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if not environ.get("REMOTE_ADDR") and forwarded:
            environ["REMOTE_ADDR"] = forwarded.rsplit(",", 1)[-1].strip()
        return self.app(environ, start_response)
