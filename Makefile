# Two commands keep this project usable on a fresh machine:
#   make serve   set up a virtualenv and run Messenger on its embedded defaults
#   make test    set up a virtualenv and run the test suite (needs MariaDB and Redis; see README)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: web-app-if-node serve test check lint typecheck bench clean plugin plugin-limits topology ship-check lock chaos fuzz web web-test e2e e2e-full e2e-screenshots

# -qq: errors only (no per-package notices); the project's own warnings are fixed, not hidden
PIP_INSTALL := $(BIN)/pip install --quiet --quiet --disable-pip-version-check

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

# The product alone: what `make serve` runs.
$(VENV)/.product: pyproject.toml | $(BIN)/activate
	$(PIP_INSTALL) -e .
	touch $@

# The product and the dev extras (test, lint, type-check, benchmark tools), and the Python client
# library (its own distribution, clients/python: tests/client runs it against both stacks); implies .product.
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml | $(BIN)/activate
	$(PIP_INSTALL) -e '.[dev]' -e clients/python
	touch $@ $(VENV)/.product

# Builds the chat app first when Node.js >= 20.19 is there (and only when its sources changed);
# without Node.js, or when the build fails, the API serves a page at / saying how to build it.
serve: $(VENV)/.product web-app-if-node
	$(BIN)/messenger serve

test: $(VENV)/.installed plugin
	$(BIN)/pytest

# The Mosquitto auth/ACL plugin (C); installs Debian's mosquitto-dev, libcurl and cJSON headers if missing.
plugin:
	@scripts/ensure-plugin-deps.sh
	$(MAKE) -s -C broker/mosquitto

# The plugin's limits header from acl/limits.py, their one definition (commit the result: the
# broker image builds the plugin without Python; a test fails while it is stale).
plugin-limits: $(VENV)/.product
	$(BIN)/python -m scripts.plugin_limits

# The production topology on loopback: Mosquitto + plugin, API, two handlers, bridge, a worker
# (against MariaDB and Redis on 127.0.0.1; override with MESSENGER_DATABASE_URL / MESSENGER_REDIS_URL).
topology: $(VENV)/.installed plugin
	$(BIN)/python -m scripts.topology

# The chaos suite at release scale (docs/chaos.md): per fault, 10,000 messages and 30 s outages on
# the suite's own MariaDB and Redis. `make test` runs its short version.
chaos: $(VENV)/.installed plugin
	CHAOS_SCALE=full $(BIN)/pytest tests/chaos -s

# Fuzz the MQTT protocol decoder with atheris/libFuzzer (the fuzz extra): make fuzz FUZZ_RUNS=1000000.
# New inputs go to var/fuzz/protocol; a crash is written as crash-<sha1> (replay: the script and its path).
FUZZ_RUNS ?= 100000
$(VENV)/.fuzz: pyproject.toml | $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev,fuzz]'
	touch $@

fuzz: $(VENV)/.fuzz
	mkdir -p var/fuzz/protocol
	$(BIN)/python tests/fuzz/fuzz_protocol.py -runs=$(FUZZ_RUNS) -dict=tests/fuzz/protocol.dict \
		var/fuzz/protocol tests/fuzz/corpus/protocol

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check messenger acl broker handler bridge api launch scripts bench tests/launch tests/ship tests/chaos tests/browser tests/test_architecture.py \
		clients/python tests/client examples

typecheck: $(VENV)/.installed
	$(BIN)/mypy

check: lint typecheck

# The benchmark suite (docs/performance.md): make bench SCENARIOS="pipeline connect" ARGS="--stack production"
SCENARIOS ?= all
bench: $(VENV)/.installed plugin
	$(BIN)/python -m bench $(SCENARIOS) $(ARGS)

clean:
	rm -rf $(VENV) .venv-ship var .mypy_cache .ruff_cache .pytest_cache
	$(MAKE) -s -C broker/mosquitto clean

# Static checks of what ships: hadolint, actionlint, check-jsonschema, yamllint, shellcheck and checkov
# over the Dockerfiles, workflows, compose files, YAML and shell scripts (tools in their own .venv-ship).
ship-check:
	PYTHON=$(PYTHON) scripts/ship-check.sh

# Regenerate the images' hashed runtime lock after a change to pyproject.toml's dependencies
# (tests/ship/test_packaging.py fails until it is done). uv goes into its own throwaway venv.
lock:
	$(PYTHON) -m venv var/uv-venv
	var/uv-venv/bin/pip install --quiet --quiet --disable-pip-version-check 'uv>=0.9,<1'
	var/uv-venv/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
		--generate-hashes --quiet -o requirements/runtime.lock

# The browser side (web/, npm workspaces; Node.js >= 20.19): install exactly what web/package-lock.json
# pins (from npm's cache when it has it), then build the client library to web/lib/dist and the chat
# app to web/app/dist, or type-check, unit-test (Vitest, in-memory fakes: no broker needed) and build both.
NPM_CI := npm ci --prefix web --no-audit --no-fund --prefer-offline --loglevel=error

web:
	$(NPM_CI)
	npm run --prefix web --silent build

web-test:
	$(NPM_CI)
	npm run --prefix web --silent typecheck
	npm run --prefix web --silent test
	npm run --prefix web --silent build >/dev/null

# The chat app end to end in Debian's Chromium (Playwright; web/e2e): every scenario against
# `messenger serve` and against the Mosquitto topology (.ci/run runs this). CHROMIUM_PATH picks
# another Chromium; nothing downloads a browser. ARGS go to Playwright: ARGS='--project serve -g block'.
# On a failure: screenshots of every page, a trace and the stack's logs under var/e2e/results.
E2E := npx --prefix web/e2e playwright test -c web/e2e/playwright.config.ts

e2e: $(VENV)/.installed plugin web
	$(E2E) $(ARGS)

# ... and on a phone-sized screen too
e2e-full: $(VENV)/.installed plugin web
	MESSENGER_E2E_FULL=1 $(E2E) $(ARGS)

# The screenshots in docs/screenshots (and the README), taken by the scenarios on `messenger serve`
e2e-screenshots: $(VENV)/.installed plugin web
	MESSENGER_E2E_SCREENSHOTS=$(CURDIR)/docs/screenshots $(E2E) --project serve \
		-g 'live conversation|tip with no balance|list message' $(ARGS)

# The chat app's build (web/app/dist, what the API serves at /), redone when a source changed.
WEB_SOURCES := $(wildcard web/package.json web/package-lock.json web/*/package.json web/app/index.html \
	web/app/vite.config.ts web/app/src/* web/app/public/* web/lib/src/*)
NODE_OK := node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'

web/app/dist/index.html: $(WEB_SOURCES)
	$(MAKE) -s web

web-app-if-node:
	@if command -v npm >/dev/null 2>&1 && $(NODE_OK) 2>/dev/null; then \
		$(MAKE) -s web/app/dist/index.html || echo "make serve: the chat app did not build; serving the API without it" >&2; \
	else \
		echo "make serve: Node.js >= 20.19 with npm not found: serving the API only (http://127.0.0.1:8080/ says how to build the app)" >&2; \
	fi
