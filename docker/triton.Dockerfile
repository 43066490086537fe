# syntax=docker/dockerfile:1
# Triton 2.51.0 (NGC 24.10: CUDA 12.6, ONNX Runtime 1.19.2 with the TensorRT and CUDA providers)
# plus what our Python-backend models import: the img2mesh package and its pinned dependencies,
# installed into the system Python 3.10 that the container's backend stub embeds.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}

# No library reports to a third party (img2mesh/telemetry.py, docs/facts.md "Telemetry").
ENV ORT_DISABLE_TELEMETRY=1 \
    HF_HUB_DISABLE_TELEMETRY=1

# The base image upgrades numpy to 2.x when it is built; the 24.10 stub then returns empty tensors,
# so the lock pins numpy 1.26 (and everything else) for Python 3.10. --no-deps: the lock is complete.
COPY docker/requirements/triton.txt /tmp/requirements.txt
RUN python3 -m pip install --no-cache-dir --no-deps --only-binary=:all: -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Only the package the models import; the rest of the project (torch code, worker) stays out.
COPY pyproject.toml /tmp/src/pyproject.toml
COPY img2mesh /tmp/src/img2mesh
RUN python3 -m pip install --no-cache-dir --no-deps /tmp/src && rm -rf /tmp/src \
    && python3 -c "import sys, numpy, PIL, skimage, scipy, fast_simplification, cv2, openvino, img2mesh; assert sys.version_info[:2] == (3, 10), sys.version; assert numpy.__version__.startswith('1.'), numpy.__version__"

# The model repository comes from a volume (written by the exporter); TensorRT engines are cached in
# another, so restarts skip the engine build. Both are owned by the image's non-root user (uid 1000).
RUN mkdir -p /models /cache/trt && chown -R triton-server:triton-server /models /cache
USER 1000:1000

EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", "--load-model=*"]
