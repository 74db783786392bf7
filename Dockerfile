# The MNIST digit service: the FastAPI app (`python -m service`, the default command) and the
# offline trainer (`python -m trainer`, see docker-compose.yml) in one image, with the model
# versions from models/ inside it. See docs/docker.md.
#
#   docker build -t mnist-service:local .
#   docker run --rm -p 127.0.0.1:8000:8000 mnist-service:local
#
# The base is swappable only so that machines without Docker Hub can build from a local stand-in
# (--build-arg BASE_IMAGE=...); everywhere else it is the official image.
ARG BASE_IMAGE=python:3.12-slim

# --- builder: a virtualenv with the pinned runtime dependencies ---------------------------------
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
# Only requirements.txt here, so that editing the code never re-installs the dependencies.
COPY requirements.txt /tmp/requirements.txt
# Every pin has a binary wheel for Linux; refusing source builds keeps compilers out of the picture.
# pip and setuptools are only needed to install: they do not go into the final image.
RUN /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

# --- final: the venv, the code, the models; runs as an unprivileged user ------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="mnist-service" \
      org.opencontainers.image.description="A NumPy MLP that reads handwritten digits: HTTP service and trainer"

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
       --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

# Inside a container the service listens on every interface (the default is 127.0.0.1, which is
# unreachable through a published port); the folders are the volumes declared below.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    MPLCONFIGDIR=/home/app/.cache/matplotlib \
    MNIST_HOST=0.0.0.0 \
    MNIST_PORT=8000 \
    MNIST_MODELS_DIR=/app/models \
    MNIST_STATE_DIR=/app/state \
    MNIST_CACHE_DIR=/app/data

# matplotlib (training plots, /weights/*.png) builds its font cache on first use: do it once here.
RUN python -c "import matplotlib.font_manager" \
    && chown -R app:app /home/app/.cache

WORKDIR /app
# The code, plus models/ when the checkout has it (.dockerignore lets nothing else in). The code
# stays owned by root; the app user owns only the folders it writes.
COPY . /app/
RUN mkdir -p /app/models /app/state /app/data \
    && chown -R app:app /app/models /app/state /app/data \
    && python -m compileall -q /app/mlp /app/trainer /app/service

# A named volume mounted on an empty volume is first filled with the image's content at that path
# (files and ownership), so the baseline model in /app/models seeds the `models` volume on first run.
VOLUME ["/app/models", "/app/state", "/app/data"]

USER app
EXPOSE 8000

# Ready = a model version is loaded and warmed up (503 before, and while shutting down).
# The slim image has no curl; urlopen raises on any non-2xx answer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('MNIST_PORT', '8000'), timeout=2)"]

# uvicorn handles SIGTERM: /readyz turns 503, in-flight requests drain (MNIST_SHUTDOWN_DRAIN_S),
# running training jobs are stopped and recorded.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
