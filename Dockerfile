# The router image: small, non-root, configuration at /config (the embedded default from
# config/ unless another folder is mounted there).
#   docker build -t event-router .
#   docker run -v $PWD/config:/config -v router-data:/data event-router
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
COPY connectors ./connectors
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[all]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home router
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config /config
USER router
WORKDIR /data
ENV ROUTER_CONFIG=/config \
    ROUTER_STORE_URL=sqlite:////data/router.db \
    PYTHONUNBUFFERED=1
EXPOSE 9090 9001
VOLUME ["/config", "/data"]
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2).status == 200 else 1)"
# The operations listener binds 127.0.0.1 unless told otherwise; inside a container publish it
# with `router: {http_listen: 0.0.0.0:9090}` in the config.
ENTRYPOINT ["router"]
CMD ["run", "--config", "/config"]
