"""Slow clients, as phones on bad links are: run as its own process by tests/test_front.py.

    python -m testing.slow_clients URL --uploaders 200 --downloaders 200 --seconds 20 --path /model.onnx

Each client comes from its own loopback address (all of 127.0.0.0/8 is loopback), as phones
do from theirs. An uploader sends a prediction request's headers, then its body at one byte
a second; a downloader asks for a large file and reads it at 1 KB a second through a small
receive buffer. One asyncio loop drives them all, so the test's own process (which times a
normal client) shares no interpreter lock with them.

It prints one JSON line when every client is under way ({"event": "under_way", ...}), and
one at the end ({"event": "done", ...}): how many were still at it, unanswered and not cut
off, when they stopped: at a line on standard input, or after --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import time
from urllib.parse import urlsplit

BODY_BYTES = 200_000  # what an uploader says it will send; it never gets near the end
READ_BYTES_PER_SECOND = 1024


def client_address(index: int) -> str:
    """127.1.0.2, 127.1.0.3, ...: one loopback address per client, none of the test's others."""
    return f"127.1.{index // 250}.{index % 250 + 2}"


async def open_from(address: str, host: str, port: int, receive_buffer: int | None = None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((address, 0))
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


class Tally:
    def __init__(self, seconds: float):
        self.until = time.monotonic() + seconds
        self.under_way = {"uploaders": 0, "downloaders": 0}
        self.still_going = {"uploaders": 0, "downloaders": 0}
        self.problems: list[str] = []


async def uploader(index: int, host: str, port: int, path: str, tally: Tally) -> None:
    try:
        reader, writer = await open_from(client_address(index), host, port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {BODY_BYTES}\r\n\r\n".encode() + b"\xff\xd8"
        )
        await writer.drain()
        tally.under_way["uploaders"] += 1
        answer = asyncio.ensure_future(reader.read(1))
        while time.monotonic() < tally.until:
            await asyncio.wait([answer], timeout=1.0)
            if answer.done():
                tally.problems.append(f"uploader {index} was answered or cut off: {answer.result()!r}")
                break
            writer.write(b"\x00")
            await writer.drain()
        else:
            tally.still_going["uploaders"] += 1
        answer.cancel()
        writer.close()
    except OSError as error:
        tally.problems.append(f"uploader {index}: {type(error).__name__}: {error}")


async def downloader(index: int, host: str, port: int, path: str, tally: Tally) -> None:
    try:
        reader, writer = await open_from(client_address(index), host, port, receive_buffer=16 * 1024)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        if not head.startswith(b"HTTP/1.1 200"):
            tally.problems.append(f"downloader {index} got {head[:80]!r}")
            writer.close()
            return
        tally.under_way["downloaders"] += 1
        while time.monotonic() < tally.until:
            await asyncio.sleep(1.0)
            if not await reader.read(READ_BYTES_PER_SECOND):
                tally.problems.append(f"downloader {index} was cut off")
                break
        else:
            tally.still_going["downloaders"] += 1
        writer.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
        tally.problems.append(f"downloader {index}: {type(error).__name__}: {error}")


def report(event: str, tally: Tally, **extra) -> None:
    print(json.dumps({"event": event, **extra, "under_way": tally.under_way, "still_going": tally.still_going,
                      "problems": tally.problems[:20]}), flush=True)


async def run(url: str, uploaders: int, downloaders: int, seconds: float, upload_path: str, download_paths: list[str]) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    tally = Tally(seconds)

    def stop() -> None:
        sys.stdin.readline()
        tally.until = time.monotonic()

    asyncio.get_running_loop().add_reader(sys.stdin, stop)
    tasks = [asyncio.ensure_future(uploader(i, host, port, upload_path, tally)) for i in range(uploaders)]
    tasks += [
        asyncio.ensure_future(downloader(uploaders + i, host, port, download_paths[i % len(download_paths)], tally))
        for i in range(downloaders)
    ]
    wanted = {"uploaders": uploaders, "downloaders": downloaders}
    while tally.under_way != wanted and time.monotonic() < tally.until and not tally.problems:
        await asyncio.sleep(0.1)
    report("under_way", tally, complete=tally.under_way == wanted)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 30)
    report("done", tally)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--uploaders", type=int, default=200)
    parser.add_argument("--downloaders", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--upload-path", default="/predict")
    parser.add_argument("--download-path", action="append", dest="download_paths")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket per client
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run(args.url, args.uploaders, args.downloaders, args.seconds, args.upload_path,
                    args.download_paths or ["/model.onnx"]))


if __name__ == "__main__":
    sys.exit(main())
