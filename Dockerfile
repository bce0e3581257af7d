# The tritonfleet image: control plane and gateway (`tritonfleet controlplane ...`,
# `tritonfleet gateway ...`). Triton itself runs from NVIDIA's tritonserver image.
#
#   docker build -t ghcr.io/tritonfleet/tritonfleet:0.1.0 .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# Wheels for the package and every dependency, so the runtime stage needs no compiler.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels tritonfleet \
 && groupadd --gid 10001 tritonfleet \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/tritonfleet tritonfleet \
 && mkdir -p /var/lib/tritonfleet && chown 10001:10001 /var/lib/tritonfleet
# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/tritonfleet
EXPOSE 8080 8081
ENTRYPOINT ["tritonfleet"]
CMD ["--help"]
