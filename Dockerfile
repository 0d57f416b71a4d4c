# The router image: non-root (uid 10001), configuration at /config (config/ of the repository,
# baked in; mount a folder there to replace it), state under /data (the SQLite store, and the
# embedded configuration's ./inbox, which is /data/inbox since /data is the working directory).
#   docker build -t event-router .
#   docker run -d --name router --stop-timeout 45 -e ROUTER_REPLICA_ID=router-1 \
#     -p 9090:9090 -v router-data:/data -v "$PWD/inbox:/data/inbox" event-router
# --stop-timeout must exceed router.shutdown_timeout (30 s) or `docker stop` kills the drain
# (exit 137). docs/container.md has the mount points, the replica id and scripts/docker-smoke.

# Build stage: dependencies into a virtual environment first (a layer that changes only with
# pyproject.toml), then the router itself without dependencies. No wheel is left behind: the
# runtime stage copies the environment and the router's files alone.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /opt/router
WORKDIR /src
COPY pyproject.toml ./
# The extras whose libraries the image holds, comma-separated: all (every source, destination
# and store) by default; e.g. --build-arg EXTRAS=all,tracing,otlp for OpenTelemetry traces.
ARG EXTRAS=all
RUN python3.11 -c "import os, sys, tomllib; \
p = tomllib.load(open('pyproject.toml', 'rb'))['project']; o = p['optional-dependencies']; \
wanted = [e.strip() for e in os.environ['EXTRAS'].split(',') if e.strip()]; \
bad = [e for e in wanted if e not in o]; \
bad and sys.exit(f'EXTRAS: no extra {bad} in pyproject.toml; known: {sorted(o)}'); \
print('\n'.join(p['dependencies'] + [d for e in wanted for d in o[e]]))" > requirements.txt \
 && /opt/router/bin/pip install -r requirements.txt
# The router goes to /opt/router-app (on the environment's path through a .pth file), so that
# a change to the code changes only that small layer of the image, not the environment's.
RUN echo /opt/router-app > "$(/opt/router/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/router-app.pth"
COPY README.md setup.py ./
COPY router ./router
COPY connectors ./connectors
COPY migrations ./migrations
RUN /opt/router/bin/pip install --no-deps --target /opt/router-app . \
 && /opt/router/bin/python -c "import router.cli, connectors.directory"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --gid 0 --home-dir /data --create-home --no-log-init router \
 && chmod 0770 /data
COPY --from=build /opt/router /opt/router
COPY --from=build /opt/router-app /opt/router-app
COPY config /config
ENV PATH=/opt/router-app/bin:/opt/router/bin:$PATH \
    ROUTER_CONFIG=/config \
    ROUTER_STORE_URL=sqlite:////data/router.db \
    ROUTER_HTTP_LISTEN=0.0.0.0:9090 \
    PYTHONUNBUFFERED=1
WORKDIR /data
USER 10001:0
# 9090: the operations listener (/healthz, /readyz, /metrics, /console), at ROUTER_HTTP_LISTEN.
# 9000: the ingress listener (Invoke API, function URLs) and 9001: the Lambda Runtime API of
# runtime-api functions, when the configuration turns them on with a 0.0.0.0 listen address.
EXPOSE 9090 9000 9001
VOLUME ["/data"]
# The check reads ROUTER_HTTP_LISTEN, so `-e ROUTER_HTTP_LISTEN=0.0.0.0:8080` moves it too.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "router.healthcheck"]
# SIGTERM: the router stops polling and drains in-flight batches (router.shutdown_timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["router"]
CMD ["run"]
