# syntax=docker/dockerfile:1
# Egress sidecar image. Two stages: wheels are built with the compiler toolchain of the first
# stage; the runtime stage installs only those wheels and runs as a numeric non-root user.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY sidecar ./sidecar
# The sidecar's wheel and the wheels of every dependency, so the runtime stage needs no network
# build tools.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels egress-sidecar \
    && groupadd --system --gid 10001 sidecar \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sidecar
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 9901
# No curl in the slim image: probe /health on the ops listener with the interpreter itself.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9901/health', timeout=2).status == 200 else 1)"]
# Exec form: the sidecar itself is PID 1 (no shell in between), so SIGTERM reaches Python and
# starts the drain (readiness 503, keep serving for server.drain_time, then finish in-flight requests).
ENTRYPOINT ["sidecar"]
