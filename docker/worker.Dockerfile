# syntax=docker/dockerfile:1
# The client worker: Redis jobs -> Triton (gRPC) -> GLB, USDZ, poster -> storage -> webhook. No torch,
# no model code: only the worker's pinned dependencies, run as an unprivileged user.
FROM python:3.11-slim-bookworm

# No library reports to a third party (img2mesh/telemetry.py, docs/facts.md "Telemetry").
ENV ORT_DISABLE_TELEMETRY=1 \
    HF_HUB_DISABLE_TELEMETRY=1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libosmesa6: Mesa's OpenGL rasterised on the CPU, through which VTK renders the poster off screen
# (asset/poster.py). Unpinned, so that a rebuild picks up Debian's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libosmesa6 \
    && rm -rf /var/lib/apt/lists/*

COPY docker/requirements/worker.txt /tmp/requirements.txt
RUN pip install --no-deps --only-binary=:all: -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY pyproject.toml /tmp/src/pyproject.toml
COPY img2mesh /tmp/src/img2mesh
COPY asset /tmp/src/asset
COPY client_worker /tmp/src/client_worker
RUN pip install --no-deps /tmp/src && rm -rf /tmp/src && pip check

RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin worker
USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["python", "-m", "client_worker"]
CMD ["run"]
