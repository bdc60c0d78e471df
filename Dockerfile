# moodring in a container: `docker build -t moodring .`, then
#   docker run -d --name moodring \
#     -v "$PWD/moodring.yaml:/etc/moodring/moodring.yaml:ro" -v moodring-state:/var/lib/moodring \
#     moodring
# With no config mounted, `moodring run` finds none and uses the built-in one. Another file:
# `moodring run -c PATH` as the command, or MOODRING_CONFIG=PATH. Settings also come from
# MOODRING_* variables (MOODRING_NOTIFY__URLS='["tgram://..."]'). /healthz and /metrics
# listen on 127.0.0.1:9701 inside the container; to scrape them from outside, set
# MOODRING_HTTP__HOST=0.0.0.0 and publish the port (-p 9701:9701).

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
ENV PATH=/opt/moodring/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MOODRING_STATE_DIR=/var/lib/moodring
USER 999:999
WORKDIR /var/lib/moodring
VOLUME ["/etc/moodring", "/var/lib/moodring"]
EXPOSE 9701
# python's urllib, as the slim image has no curl; an HTTP error or no answer exits non-zero
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9701/healthz', timeout=3).status==200 else 1)"]
ENTRYPOINT ["moodring"]
CMD ["run"]
