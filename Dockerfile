# syntax=docker/dockerfile:1
# The Python services: one image, the role chosen by the command.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#                --build-arg SOURCE=https://github.com/OWNER/REPO -t messenger .
#   docker run IMAGE api | handler | bridge | worker | serve | db upgrade | probe [URL]
#
# Production runs one role per container with its command given explicitly (docker-compose.yml).
# Without a command the image runs `messenger serve` (everything in one process, SQLite in
# /var/lib/messenger/var), for trying it out. The image listens on all interfaces
# (MESSENGER_BIND_HOST=0.0.0.0: a container's loopback is unreachable from outside), and on a
# non-loopback address every role refuses the published development token secret, so serve needs
# a secret of its own:
#
#   docker run --rm -p 8080:8080 -p 1884:1884 -p 8083:8083 \
#     -e MESSENGER_JWT_SECRET="$(openssl rand -hex 32)" -v messenger-data:/var/lib/messenger/var IMAGE
#
# tests/ship/test_packaging.py runs the builder stage's COPY and RUN lines without Docker and then
# what this image runs, so keep every build step in those instructions. The web stage builds the
# chat app (make web-test covers that build; the packaging test stands a stub in for its dist/).

# The chat app (web/app): built here with Node.js, only its static files (dist/) reach the image.
# The lockfile pins every package; the library is compiled from its sources by Vite.
FROM node:20.20.2-bookworm-slim AS web
ENV NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_AUDIT=false
WORKDIR /web
COPY web/package.json web/package-lock.json ./
COPY web/lib/package.json lib/package.json
COPY web/app/package.json app/package.json
RUN npm ci --loglevel=error
COPY web/lib/ lib/
COPY web/app/ app/
RUN npm run build --workspace app

FROM python:3.11.17-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/messenger
WORKDIR /src
# The runtime dependencies first (a layer that changes only with the lock): exact versions and
# hashes, wheels only (the runtime stage has no compiler). In hash-checking mode pip also refuses a
# lock that misses a dependency of a locked package. The venv gets no pip or setuptools of its own.
COPY requirements/runtime.lock requirements/runtime.lock
RUN python -m venv --without-pip "$VIRTUAL_ENV" \
    && python -m pip --python "$VIRTUAL_ENV/bin/python" install \
        --require-hashes --only-binary=:all: -r requirements/runtime.lock
# The project as a wheel (pyproject.toml decides what goes in it: packages, migrations, package
# data), installed without dependencies; `pip check` fails when the lock lacks one the wheel needs.
COPY pyproject.toml README.md LICENSE ./
COPY messenger/ messenger/
COPY acl/ acl/
COPY broker/ broker/
COPY handler/ handler/
COPY bridge/ bridge/
COPY api/ api/
COPY launch/ launch/
RUN python -m pip wheel --no-deps --wheel-dir dist . \
    && python -m pip --python "$VIRTUAL_ENV/bin/python" install --no-deps dist/*.whl \
    && python -m pip --python "$VIRTUAL_ENV/bin/python" check

FROM python:3.11.17-slim-bookworm
# var/ exists and is the user's, so a new named volume mounted there is the user's too
RUN groupadd --system --gid 10001 messenger \
    && useradd --system --uid 10001 --gid messenger --home-dir /var/lib/messenger --create-home \
        --shell /usr/sbin/nologin messenger \
    && install -d -o messenger -g messenger -m 0750 /var/lib/messenger/var
COPY --from=builder /opt/messenger /opt/messenger
# the chat app the API serves at / (MESSENGER_WEB_DIR)
COPY --from=web /web/app/dist /opt/messenger-web
ENV PATH="/opt/messenger/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MESSENGER_BIND_HOST=0.0.0.0 \
    MESSENGER_WEB_DIR=/opt/messenger-web
# serve's default database is var/messenger.db relative to here
WORKDIR /var/lib/messenger
USER 10001:10001
# 8080 REST API; 9100 the per-role internal port (MESSENGER_INTERNAL_PORT: health, /metrics,
# the broker gateway; never publish it); 1884 and 8083 serve's embedded broker (MQTT, WebSocket)
EXPOSE 8080 9100 1884 8083
# GET /healthz on MESSENGER_INTERNAL_PORT when set, else on MESSENGER_API_PORT (8080)
# every 2 s while starting (Docker 25+), so what waits for service_healthy starts promptly; then every 15 s
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --start-interval=2s --retries=3 CMD ["messenger", "probe"]

ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="messenger-mqtt" \
      org.opencontainers.image.description="Messenger, a self-hosted chat backend on MQTT: REST API, handler, presence bridge, worker, or all in one (serve)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

ENTRYPOINT ["messenger"]
CMD ["serve"]
