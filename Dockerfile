# The server image: `handrail web` by default; `migrate` and `worker` are the other Procfile lines.
# The config file is not in the image: mount it at /etc/handrail/handrail.yml (HANDRAIL_CONFIG).
# Secrets come from the environment (see the README's "Containers").

# Builder: the project and its dependencies into a virtualenv at /opt/venv. Every dependency ships
# a wheel for this Python, so nothing is compiled; the final image takes the virtualenv alone.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# Only what the package is built from: the client (client/) and the tests are not part of the server.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
COPY local ./local
# The project itself, at the dependency versions pyproject.toml allows; then pip and setuptools
# leave the virtualenv (nothing imports them at run time: about 20 MB).
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM python:3.11-slim-bookworm
# A fixed uid and gid (10001), so a mounted config file or SQLite directory can be given to it, and
# numeric in USER so that a runtime can see it is not root without the image's /etc/passwd.
RUN groupadd --system --gid 10001 handrail \
    && useradd --system --uid 10001 --gid handrail --home-dir /app --no-create-home --shell /usr/sbin/nologin handrail
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=3000 \
    HANDRAIL_CONFIG=/etc/handrail/handrail.yml
# The working directory is the user's own: without DATABASE_URL, the SQLite file handrail.db goes here.
WORKDIR /app
RUN chown handrail:handrail /app
USER 10001:10001
EXPOSE 3000
# /healthz answers while the process is up; python's urllib, so the image needs no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=2)"]
ENTRYPOINT ["handrail"]
CMD ["web"]
