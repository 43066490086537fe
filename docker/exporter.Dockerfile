# syntax=docker/dockerfile:1
# `python -m export`: builds the Triton model repository from the official checkpoints, and
# `python -m export.rollout` rolls a running Triton between versions. ONNX export needs no GPU, so
# torch is the CPU build (a CUDA torch would add GBs for nothing); TensorRT engines are built later,
# by Triton, on the serving GPU.
FROM python:3.11-slim-bookworm

# No library reports to a third party (img2mesh/telemetry.py, docs/facts.md "Telemetry").
ENV ORT_DISABLE_TELEMETRY=1 \
    HF_HUB_DISABLE_TELEMETRY=1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-deps --index-url "${TORCH_INDEX_URL}" torch==2.13.0

COPY docker/requirements/exporter.txt /tmp/requirements.txt
RUN pip install --no-deps --only-binary=:all: -r /tmp/requirements.txt && rm /tmp/requirements.txt && pip check

# The exporter runs from the source tree: it copies the Python models' code from model_repository/.
WORKDIR /app
COPY pyproject.toml ./
COPY img2mesh ./img2mesh
COPY triposr ./triposr
COPY export ./export
COPY model_repository ./model_repository

# Same uid as Triton's user, so the repository it writes into the volume is Triton's to read.
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin exporter \
    && mkdir -p /models /cache/huggingface /cache/u2net \
    && chown -R exporter:exporter /models /cache
USER 1000:1000
# Downloads (the TripoSR checkpoint from the hub, rembg's u2net.onnx) land in the cache volume.
ENV HF_HOME=/cache/huggingface \
    U2NET_HOME=/cache/u2net

# No ENTRYPOINT: compose's one-shot export (`sh -c …`) and the runbook's
# `docker compose run --rm exporter python -m export …` are whole commands.
CMD ["python", "-m", "export", "--help"]
