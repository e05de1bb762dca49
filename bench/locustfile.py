"""The load: a closed loop of N users that POST images to /predict, a fixed number in all.

Run by ``bench.load`` as ``locust -f bench/locustfile.py --headless -u C -r C ...``. Each
user sends its next request as soon as the previous answer arrives (no wait time), so C
users keep exactly C requests in flight. Request i sends payload i mod P, so every server
sees the same images in the same order. Every request's start and exact latency go to a
JSON file (locust's own percentiles are rounded to whole milliseconds and buckets).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, events, task
from locust.exception import StopUser

from testing.multipart import form_body

@events.init_command_line_parser.add_listener
def add_arguments(parser):
    parser.add_argument("--payload-list", help="a file naming one image path per line")
    parser.add_argument("--request-count", type=int, default=100, help="requests in all")
    parser.add_argument("--record", help="where to write every request's timing (JSON)")
    parser.add_argument("--batch-files", type=int, default=0,
                        help="0: POST /predict, one image a request; N: POST /predict/batch, N images a request")


class Plan:
    """The shared budget: hands out request numbers until the fixed count is reached."""

    def __init__(self, environment, payloads: list[tuple[str, bytes]], count: int):
        self.environment = environment
        self.payloads = payloads
        self.count = count
        self.issued = 0
        self.finished = 0
        self.records: list[list] = []
        # The load tool shares the cores with the server: count the CPU it takes while
        # the requests run (not its start-up).
        self.cpu_started = time.process_time()
        self.cpu_seconds = 0.0

    def next_payload(self, images: int = 1):
        """The next request's image, or its ``images`` images for a batch; None when all are sent."""
        if self.issued >= self.count:
            return None
        first = self.issued * images
        chosen = [self.payloads[(first + i) % len(self.payloads)] for i in range(images)]
        self.issued += 1
        return chosen


plan: Plan | None = None


@events.test_start.add_listener
def load_payloads(environment, **_):
    global plan
    options = environment.parsed_options
    paths = [Path(line) for line in Path(options.payload_list).read_text().split("\n") if line]
    plan = Plan(environment, [(p.name, p.read_bytes()) for p in paths], options.request_count)


@events.request.add_listener
def record_request(start_time, response_time, response, exception, **_):
    status = getattr(response, "status_code", 0) or 0
    plan.records.append([start_time, response_time, status, exception is None and status == 200])
    plan.finished += 1
    if plan.finished == plan.count:
        plan.cpu_seconds = time.process_time() - plan.cpu_started
        # Quit from a fresh greenlet: quitting kills the users, this one included.
        gevent.spawn(plan.environment.runner.quit)


@events.quitting.add_listener
def write_records(environment, **_):
    target = environment.parsed_options.record
    if target and plan is not None:
        Path(target).write_text(json.dumps({"requests": plan.records, "cpu_seconds": plan.cpu_seconds}))


class ImageUploader(FastHttpUser):
    # The reference app can take many seconds per answer when it collapses; wait for it.
    network_timeout = 600.0
    connection_timeout = 60.0
    max_retries = 0

    @task
    def predict(self):
        batch_files = self.environment.parsed_options.batch_files
        payloads = plan.next_payload(max(1, batch_files))
        if payloads is None:
            raise StopUser()
        body, content_type = form_body(payloads)
        path = "/predict/batch" if batch_files else "/predict"
        self.client.post(path, data=body, headers={"Content-Type": content_type}, name=path)
