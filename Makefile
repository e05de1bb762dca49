# `make run` and `make test` are the two commands in the README; each sets up what it needs.
VENV ?= .venv
PYTHON ?= python3
PORT ?= 8000
# Where an index is unreachable (offline CI with a local torch wheel), fail over at once
# instead of retrying it for minutes. Set PIP_RETRIES=5 on a flaky network.
PIP_RETRIES ?= 0
PIP = $(VENV)/bin/pip install --retries $(PIP_RETRIES) --disable-pip-version-check
# The browser tests drive Debian's Chromium: Playwright's own browser download needs the
# internet. Set CHROMIUM to use another Chromium binary.
export CHROMIUM ?= /usr/bin/chromium
# The front (bin/start-nginx, docs/front.md) runs Debian's nginx. Set NGINX_BINARY to use another.
export NGINX_BINARY ?= /usr/sbin/nginx
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)
# What makes nginx ignore SIGTERM, so that a stop loses no request (docs/operations.md): built
# by bin/post_compile, the build step a git push runs after pip, here as there.
IGNORE_SIGTERM = front/nginx_ignores_sigterm.so

.PHONY: run test test-deploy bench data install install-dev variants vendor postgresql-server

run: $(VENV)/.run-installed $(NGINX_BINARY) $(IGNORE_SIGTERM)
	PORT=$(PORT) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" sh -c "$$(sed -n 's/^web: //p' Procfile)"

test: $(VENV)/.dev-installed $(CHROMIUM) $(NGINX_BINARY) $(IGNORE_SIGTERM) postgresql-server
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The git-push deploy test builds a whole release from scratch (several minutes), so it has
# its own command; CI runs both.
test-deploy: $(VENV)/.dev-installed $(NGINX_BINARY)
	$(VENV)/bin/python -m pytest -m deploy $(PYTEST_ARGS)

# The benchmark (bench/README.md, which says how long it takes): every contender side by side; it
# rewrites bench/RESULTS.md, bench/results.json and bench/results.png.
bench: $(VENV)/.dev-installed $(NGINX_BINARY) $(IGNORE_SIGTERM)
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

# The full data set, for training and `make bench` only (the tests use tests/fixtures/):
# `make data ARCHIVE=~/Downloads/UCMerced_LandUse.zip` puts its images in data/ucmerced/,
# where the notebook and the benchmark look (training/data_set.py). Standard library only.
data:
	@test -n "$(ARCHIVE)" || { echo "Download UCMerced_LandUse.zip (docs/training.md, Data set), then: make data ARCHIVE=path/to/UCMerced_LandUse.zip"; exit 2; }
	$(PYTHON) -m training.data_set "$(ARCHIVE)"

install: $(VENV)/.run-installed
install-dev: $(VENV)/.dev-installed

$(IGNORE_SIGTERM): front/nginx_ignores_sigterm.c bin/post_compile
	bin/post_compile

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: requirements.txt | $(VENV)/bin/python
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-train.txt requirements-dev.txt requirements-ray.txt bench/requirements.txt | $(VENV)/bin/python
	$(PIP) -r requirements-dev.txt
	touch $@ $(VENV)/.run-installed

# Debian's packages for what the tests and the front run, installed where they are missing.
APT_INSTALL = $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "The browser tests need Chromium at $(CHROMIUM): install it, or set CHROMIUM=/path/to/chromium."; exit 1; }
	$(APT_INSTALL) chromium fonts-dejavu-core

$(NGINX_BINARY):
	@command -v apt-get >/dev/null || { echo "The server runs behind nginx at $(NGINX_BINARY): install it, or set NGINX_BINARY=/path/to/nginx."; exit 1; }
	$(APT_INSTALL) nginx

# The monitoring tests start their own PostgreSQL server (testing/postgres.py) from Debian's
# package; set POSTGRES_BIN to use binaries elsewhere.
postgresql-server:
	@ls $(or $(POSTGRES_BIN),/usr/lib/postgresql/*/bin)/initdb >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null || { echo "The monitoring tests need PostgreSQL's server binaries: install them, or set POSTGRES_BIN."; exit 1; }; \
	  $(APT_INSTALL) postgresql; }

# From model.zip, in one step: the server's ONNX copy, the browser's form (the smallest of float32,
# float16 and int8 that keeps the answers), their manifests and docs/model-variants.md (training/variants.py).
variants: $(VENV)/.dev-installed
	$(VENV)/bin/python -m training.variants

# The page's npm packages as served, re-created from vendor/package-lock.json. Their files are
# committed, since a git-push platform's Python build does not run npm; only this needs npm.
# onnxruntime-web ships a browser bundle. The TIFF decoder (tiff) ships ES modules that import
# fflate and iobuffer by package name, which a browser cannot resolve: esbuild bundles the three
# into one module. axe-core is the browser tests' accessibility checker: tests/vendor/, never served.
ORT_WEB = static/vendor/onnxruntime-web
ORT_WEB_FILES = ort.wasm.bundle.min.mjs ort-wasm-simd-threaded.wasm
TIFF = static/vendor/tiff
AXE = tests/vendor/axe-core
NPM_VERSION = node -p 'process.argv.slice(1).map((name) => name + " " + require("$(CURDIR)/vendor/node_modules/" + name + "/package.json").version).join(", ")'
vendor:
	cd vendor && npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(ORT_WEB) $(TIFF) $(AXE)
	cd vendor/node_modules/onnxruntime-web/dist && cp $(ORT_WEB_FILES) $(CURDIR)/$(ORT_WEB)/
	cd $(ORT_WEB) && { echo "$$($(NPM_VERSION) onnxruntime-web) from npm (vendor/package-lock.json), by make vendor"; sha256sum $(ORT_WEB_FILES); } > VERSION
	cd vendor && echo 'export { decode } from "tiff";' | node_modules/.bin/esbuild --bundle --format=esm --minify > $(CURDIR)/$(TIFF)/tiff.min.mjs
	cd vendor/node_modules && for name in tiff fflate iobuffer; do echo "== $$name"; cat $$name/LICENSE*; done > $(CURDIR)/$(TIFF)/LICENSE
	cd $(TIFF) && { echo "$$($(NPM_VERSION) tiff fflate iobuffer) from npm (vendor/package-lock.json), bundled by $$($(NPM_VERSION) esbuild), by make vendor"; sha256sum tiff.min.mjs; } > VERSION
	cp vendor/node_modules/axe-core/axe.min.js vendor/node_modules/axe-core/LICENSE $(AXE)/
	cd $(AXE) && { echo "$$($(NPM_VERSION) axe-core) from npm (vendor/package-lock.json), by make vendor"; sha256sum axe.min.js; } > VERSION
