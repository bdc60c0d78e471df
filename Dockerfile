# moodring in a container: `docker build -t moodring .`, then
#   docker run -d --name moodring -p 9701:9701 \
#     -v "$PWD/moodring.yaml:/etc/moodring/moodring.yaml:ro" -v moodring-state:/var/lib/moodring \
#     moodring
# With no config mounted, `moodring run` finds none and uses the built-in one. Another file:
# `moodring run -c PATH` as the command, or MOODRING_CONFIG=PATH. Settings also come from
# MOODRING_* variables (MOODRING_NOTIFY__URLS='["tgram://..."]'). /healthz and /metrics
# listen on 0.0.0.0:9701 inside the container (MOODRING_HTTP__HOST), so -p publishes them;
# `moodring healthcheck` asks /healthz on the configured port. docker-compose.yml adds
# Prometheus, Grafana and Mosquitto.

# Build stage: every dependency ships wheels, so no compiler is needed here either.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/moodring
WORKDIR /src
# config/ too: daemon/moodring/defaults/moodring.yaml is a symlink to config/moodring.yaml
COPY pyproject.toml README.md ./
COPY config/ config/
COPY daemon/ daemon/
RUN /opt/moodring/bin/pip install --no-cache-dir .

# Runtime stage: the same base image (the venv links to its /usr/local/bin/python3.11).
FROM python:3.11-slim-bookworm
# a fixed system uid/gid (999), so bind-mounted state can be chowned to it on the host
RUN groupadd --system --gid 999 moodring \
    && useradd --system --uid 999 --gid moodring --no-create-home \
        --home-dir /var/lib/moodring --shell /usr/sbin/nologin moodring \
    && mkdir -p /etc/moodring /var/lib/moodring \
    && chown moodring:moodring /var/lib/moodring
COPY --from=build /opt/moodring /opt/moodring
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="moodring" \
    org.opencontainers.image.description="Streaming alert daemon for cross-market divergence (ETH vs the Russell 2000, ETH/BTC, MFI)" \
    org.opencontainers.image.version="${VERSION}" \
    org.opencontainers.image.licenses="MIT" \
    org.opencontainers.image.source="https://github.com/moodring/moodring" \
    org.opencontainers.image.documentation="https://github.com/moodring/moodring#readme" \
    org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
# listen on every interface inside the container: a published port reaches it
ENV PATH=/opt/moodring/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MOODRING_STATE_DIR=/var/lib/moodring \
    MOODRING_HTTP__HOST=0.0.0.0
USER 999:999
WORKDIR /var/lib/moodring
VOLUME ["/etc/moodring", "/var/lib/moodring"]
EXPOSE 9701
# asks /healthz on the port the config (and MOODRING_HTTP__PORT) gives; one line, exit 0 or 1
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["moodring", "healthcheck"]
ENTRYPOINT ["moodring"]
CMD ["run"]
