"""gunicorn's sync worker, with a deadline for each client to send its request.

A sync worker serves one connection at a time, so a client that sends its request slowly
(a phone on a bad link, or a slowloris attack) holds a whole worker. Left alone, gunicorn's
``timeout`` ends it by killing the worker, which answers that client 500 and costs a model
reload. Here every read from the client shares one deadline, two thirds of ``timeout``
after the connection is accepted (the last third is for decoding and the model). Past it, a
read raises ``ClientTooSlow``: while the headers are still arriving gunicorn closes the
connection quietly; once the app is reading the body, the app answers 408 (web/errors.py).
Either way the worker goes on serving. A buffering proxy in front (nginx) is still the
better cure for slow clients; this keeps the worker safe without one.
"""

from __future__ import annotations

import math
import socket
import time

from gunicorn import util
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.sync import SyncWorker

# Share of gunicorn's timeout a client gets to send its whole request.
READ_SHARE_OF_TIMEOUT = 2 / 3


class ClientTooSlow(NoMoreData, TimeoutError):
    """The request did not arrive in time.

    A ``NoMoreData`` so gunicorn treats it like a client that went away (no traceback in
    the log), and a ``TimeoutError`` so the app's error handler answers it with 408.
    """

    def __init__(self, seconds: float):
        super().__init__(f"the client did not send its request within {seconds:.0f}s")

    def __str__(self) -> str:
        return str(self.buf)


class DeadlineSocket(socket.socket):
    """A client socket whose reads all share one deadline."""

    deadline = math.inf
    window = math.inf
    # A timeout gunicorn sets itself, e.g. its 2 s linger before closing; a read waits no
    # longer than it either.
    own_timeout = None

    def start_deadline(self, seconds: float) -> None:
        self.window = seconds
        self.deadline = time.monotonic() + seconds

    def settimeout(self, value):
        self.own_timeout = value
        super().settimeout(value)

    def recv(self, bufsize, flags=0):
        return self._read_by_deadline(super().recv, bufsize, flags)

    def recv_into(self, buffer, nbytes=0, flags=0):
        return self._read_by_deadline(super().recv_into, buffer, nbytes, flags)

    def sendall(self, data, flags=0):
        # The answer gets a window of its own: the deadline is for receiving the request.
        super().settimeout(None if math.isinf(self.window) else self.window)
        return super().sendall(data, flags)

    def _read_by_deadline(self, read, *args):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ClientTooSlow(self.window)
        deadline_is_nearer = self.own_timeout is None or remaining < self.own_timeout
        wait = remaining if deadline_is_nearer else self.own_timeout
        super().settimeout(None if math.isinf(wait) else wait)
        try:
            return read(*args)
        except TimeoutError:
            if deadline_is_nearer:
                raise ClientTooSlow(self.window) from None
            raise


class DeadlineSyncWorker(SyncWorker):
    """The sync worker, reading each request against ``DeadlineSocket``'s deadline."""

    def accept(self, listener):
        # SyncWorker.accept, with the accepted socket rewrapped as a DeadlineSocket.
        accepted, addr = listener.accept()
        client = DeadlineSocket(accepted.family, accepted.type, accepted.proto, fileno=accepted.detach())
        client.setblocking(True)
        if self.cfg.timeout:
            client.start_deadline(self.cfg.timeout * READ_SHARE_OF_TIMEOUT)
        util.close_on_exec(client)
        self.handle(listener, client, addr)
