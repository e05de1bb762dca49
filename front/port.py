"""$PORT: opened by the front and handed to nginx, so that the front can close it without
dropping a connection.

A TCP port that is simply closed resets every connection the kernel has taken and nginx has
not yet accepted: its clients have connected and sent their request, and get a reset. So the
front holds the port itself and gives nginx a copy (``NGINX=fd;``, the variable nginx's
own binary upgrade hands its sockets over with). On a stop it first tells the kernel to
take no new connection (a socket filter that drops a connection's first packet, so the
client's connect waits and, once the port is closed, is refused), waits until nginx has
accepted what the kernel had taken, and closes its copy; then nginx's graceful stop closes
the rest, with nothing waiting (front/start.py). docs/operations.md, "Stopping without
losing a request".
"""

from __future__ import annotations

import ctypes
import socket
import struct
import time

# A classic BPF program, run on each packet that reaches the port, from its TCP header:
# a SYN without ACK (a new connection's first packet) is dropped; the rest of a handshake
# already under way, and everything else, passes.
DROP_NEW_CONNECTIONS = (
    (0x30, 0, 0, 13),          # A = the TCP flags byte
    (0x54, 0, 0, 0x12),        # A &= SYN | ACK
    (0x15, 0, 1, 0x02),        # if A == SYN (a new connection)
    (0x06, 0, 0, 0),           #     drop it
    (0x06, 0, 0, 0xFFFFFFFF),  # else keep the whole packet
)
SO_ATTACH_FILTER = 26
# On a listening socket, TCP_INFO's tcpi_unacked (the fifth 32-bit field, after 8 bytes of
# flags) counts the connections the kernel has taken that are not yet accepted.
ACCEPT_QUEUE = struct.Struct("8xIIIII")
# A handshake that began before the filter ends within a round trip: the platform's router
# is a few milliseconds away at most.
HANDSHAKE_S = 0.1
ACCEPT_QUEUE_WAIT_S = 2.0


def open_port(address: str, port: int) -> socket.socket:
    """The listening socket nginx serves ``address``:``port`` on; nginx inherits it."""
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if listener.family == socket.AF_INET6:  # as nginx's own [::] listener: IPv6 only
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    listener.bind((address, port))
    listener.listen()  # nginx sets the backlog its configuration names
    # Non-blocking, as nginx makes the sockets it opens itself (the flag is the socket's, so
    # nginx's copy has it): a worker that lost a connection to another would wait in accept.
    listener.setblocking(False)
    listener.set_inheritable(True)
    return listener


def close_port(listener: socket.socket) -> None:
    """Take no new connection; wait until nginx has accepted every one taken; close this copy."""
    program = (ctypes.c_ubyte * 8 * len(DROP_NEW_CONNECTIONS))()
    for index, (code, jump_true, jump_false, value) in enumerate(DROP_NEW_CONNECTIONS):
        struct.pack_into("HBBI", program[index], 0, code, jump_true, jump_false, value)
    fprog = struct.pack("HL", len(DROP_NEW_CONNECTIONS), ctypes.addressof(program))
    listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    time.sleep(HANDSHAKE_S)
    deadline = time.monotonic() + ACCEPT_QUEUE_WAIT_S
    while waiting_connections(listener) and time.monotonic() < deadline:
        time.sleep(0.01)
    listener.close()


def waiting_connections(listener: socket.socket) -> int:
    """How many connections the kernel has taken on ``listener`` that nobody has accepted yet."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, ACCEPT_QUEUE.size)
    return ACCEPT_QUEUE.unpack(info)[4]
