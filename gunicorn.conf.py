"""gunicorn settings; every one can be overridden from the environment or the command line.

The model is loaded in each worker after it forks (no preload_app): torch's thread pools
do not survive fork, and a preloaded torch can hang the workers. The master itself only has
the ONNX copy checked against the model, in a subprocess, before it forks (on_starting).
"""

from front import ready
from web import multiprocess_metrics, request_memory, serving_check
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
        # The access log is the app's: JSON lines with the request id (web/access_log.py).
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
        "json": {"()": "web.json_logs.JsonFormatter"},
    },
}

# gunicorn's control socket is for its own CLI, which we do not use; one fixed path per user
# would also collide when several servers run side by side (tests, benchmarks).
control_socket_disable = True


# Prometheus multiprocess mode (web/metrics.py): the master prepares the shared directory
# before it forks the workers, lets go of each worker that exits, and cleans up at the end.
child_exit = multiprocess_metrics.child_exit
on_exit = multiprocess_metrics.on_exit


def on_starting(server):
    multiprocess_metrics.on_starting(server)
    # The ONNX copy is checked against model.zip here, once, in a subprocess, so that the
    # workers can serve it without importing torch (web/serving_check.py).
    serving_check.on_starting(server)


on_reload = serving_check.on_reload
# After a phone photo or a batch, the worker's freed heap goes back to the system.
post_request = request_memory.post_request
# Tell the front when every worker has warmed up the model, so that nginx opens $PORT then.
post_worker_init = ready.post_worker_init


# A worker that stops (a restart, a deploy, max_requests) writes the records it still has queued.
def worker_exit(_server, _worker):
    # Imported here, in the worker: prometheus_client imported in the master before
    # on_starting sets up multiprocess mode would leave every worker's metrics its own.
    from web import record_writer

    record_writer.close_all()
