"""gunicorn settings; every one can be overridden from the environment or the command line.

The model is loaded in each worker after it forks (no preload_app): torch's thread pools
do not survive fork, and a preloaded torch can hang the workers. Three hooks: who may stop
gunicorn and the front's ready file (front/hooks.py), and the metrics of a worker that
exits. A worker that stops leaves through sys.exit, so the app's own atexit handlers run
(web/records.py writes its queue).
"""

from front import hooks
from web.settings import read_runtime, read_settings

settings, runtime = read_settings(), read_runtime()
# Behind the front (bin/start-nginx, the Procfile), on the unix socket it names: nginx
# alone listens on $PORT. Started on its own (the benchmark's direct contender), on $PORT.
bind = f"unix:{runtime.app_socket}" if runtime.app_socket else f"0.0.0.0:{settings['PORT']}"
workers = settings["WEB_CONCURRENCY"]
# Tell the app how many workers share the cores, so it sizes torch's thread pool to fit.
raw_env = [f"WEB_CONCURRENCY={workers}"]
# The sync worker: one request at a time, which is all a CPU-bound model needs. nginx in front
# reads each request whole and takes each answer at once, so a slow client never holds one
# (docs/front.md).
worker_class = "sync"
preload_app = False
timeout = settings["GUNICORN_TIMEOUT"]
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so that slow leaks in native libraries stay bounded; rarely,
# since a worker's RSS is flat after warm-up and a new worker costs a core for its start-up
# and warm-up (measured: bench/README.md, "What the service does for speed").
# The jitter keeps the workers from restarting together.
max_requests = settings["MAX_REQUESTS"]
max_requests_jitter = max_requests // 10
accesslog = None  # the app writes the access log: see "web.access" below
errorlog = "-"
loglevel = settings["LOG_LEVEL"]

# The app's own log lines (model loaded, errors) go where gunicorn's go.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": loglevel.upper(), "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["console"], "propagate": False},
        # The access log is the app's: JSON lines with the request id (web/telemetry.py).
        # gunicorn's own plain line would only repeat it, so its level keeps it quiet.
        "gunicorn.access": {"level": "WARNING", "handlers": ["console"], "propagate": False},
        "web.access": {"level": "INFO", "handlers": ["json"], "propagate": False},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"},
        "json": {"()": "web.telemetry.JsonFormatter"},
    },
}

# gunicorn's control socket is for its own CLI, which we do not use; one fixed path per user
# would also collide when several servers run side by side (tests, benchmarks).
control_socket_disable = True


# The front's two hand-overs (front/hooks.py): a SIGTERM is taken from the front only, which
# sends it once nginx has drained; and the front hears when every worker has warmed up the
# model, so that nginx opens $PORT then.
when_ready = hooks.when_ready
post_worker_init = hooks.post_worker_init


def child_exit(_server, worker):
    """A worker that exits keeps its counts in /metrics; its live gauges (requests in flight, model) go."""
    # PROMETHEUS_MULTIPROC_DIR: the front's (front/start.py); unset, each worker counts alone.
    if settings["PROMETHEUS_MULTIPROC_DIR"]:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, settings["PROMETHEUS_MULTIPROC_DIR"])
