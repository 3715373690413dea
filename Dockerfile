# syntax=docker/dockerfile:1
# The one image of mlops-operator. It plays every role:
#   mlops-operator run     the operator (the Helm chart's Deployment)
#   mlops-operator train   inside a training Job
#   mlops-operator serve   inside a serving pod
# Build: docker build -t mlops-operator:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project as a wheel, installed with its dependencies into a venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The exact versions of every run-time dependency (hack/image/lock.py): the same image on every build.
# onnxruntime, onnx and skl2onnx are among them: the trainer compiles models, the server runs them.
COPY hack/image/constraints.txt ./
# EXTRAS=dask builds the image of distributed training's DaskJobs (runner, scheduler, workers):
# docker build --build-arg EXTRAS=dask -t mlops-operator:0.1.0-dask .  The default image stays lean.
ARG EXTRAS=""
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/mlops \
 && wheel="$(ls /wheels/mlops_operator-*.whl)" \
 && /opt/mlops/bin/pip install --constraint constraints.txt "${wheel}${EXTRAS:+[$EXTRAS]}" \
 && /opt/mlops/bin/pip uninstall --yes pip \
 && /opt/mlops/bin/mlops-operator --help >/dev/null \
 && /opt/mlops/bin/python -c "import onnxruntime, skl2onnx"

# --- runtime: the venv on the same base, as a fixed non-root uid
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mlops-operator" \
      org.opencontainers.image.description="Trains, serves, watches and retrains scikit-learn models from three Kubernetes custom resources" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/mlops /opt/mlops
# HOME on /tmp: the only writable place when the root filesystem is read-only
# (the chart and the operator mount an emptyDir there).
ENV PATH=/opt/mlops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
# 65532 is the uid the chart and the operator's pod specs run as (runAsNonRoot
# needs a numeric uid); it has no passwd entry and needs none.
USER 65532:65532
ENTRYPOINT ["mlops-operator"]
CMD ["--help"]
