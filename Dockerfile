# The service as a container, for platforms that build images (Fly.io, Render, Cloud Run,
# Kubernetes, ...). Same Python as runtime.txt, same requirements.txt (CPU-only torch), and
# it runs the Procfile's web command, so the container serves what a git push serves.

# The build step a git push runs after pip (bin/post_compile): the library that makes nginx
# ignore SIGTERM (front/nginx_ignores_sigterm.c), built where a C compiler is; the image that
# serves has none.
FROM python:3.11.7-slim-bookworm AS post-compile
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY bin/post_compile bin/
COPY front/nginx_ignores_sigterm.c front/
RUN bin/post_compile

FROM python:3.11.7-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

# The server runs as an unprivileged user that cannot change the code or the model.
RUN groupadd --gid 10001 app \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin app

WORKDIR /app

# nginx, the front (bin/start-nginx, docs/front.md). Debian's security updates replace the
# package in place, so a pinned revision would stop the image from building.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/*

# Requirements first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
COPY --from=post-compile /build/front/nginx_ignores_sigterm.so front/
# The default monitoring database is a SQLite file in instance/ (docs/monitoring.md): the app
# user must be able to write there. A container's disk goes with it: set DATABASE_URL or
# mount a volume at /app/instance to keep the records.
RUN mkdir -p instance && chown 10001:10001 instance

USER 10001:10001
EXPOSE 8000

# /health answers 200 once the workers have loaded the model; the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# The Procfile's web command, with PORT from the platform (8000 by default): nginx on PORT
# in front of gunicorn, both as the unprivileged user. On SIGTERM (docker stop, Kubernetes)
# it finishes every request it took and exits within 25 s: give it 30 (docker stop -t 30,
# Kubernetes' default terminationGracePeriodSeconds; docs/operations.md).
CMD ["/bin/sh", "-c", "eval \"exec $(sed -n 's/^web: *//p' Procfile)\""]
