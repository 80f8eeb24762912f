# syntax=docker/dockerfile:1
#
# One image per service, all from this file:
#
#   docker build --target <service> -t postd/<service>:<tag> .
#
# with <service> one of gateway, connectors, vault, publisher, webhook-router, health
# (tests/deploy/test_dockerfile.py keeps the targets in step with services/). The
# runtime images hold the interpreter, the locked runtime dependencies, the generated
# protobuf code, libs/common and the one service, and nothing that compiles. They run
# as uid 10001 and write nowhere but /tmp, so they run with a read-only root file
# system (deploy/k8s mounts an emptyDir there).
#
# The base is pinned to an exact Python release; a release build pins its digest too:
# --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock changes. Two virtualenvs
# from the same hashed lock: /opt/build (runtime set + the proto generators, used here
# only) and /opt/venv (runtime set alone, the one the images get, without pip).
COPY requirements.in requirements.lock ./
COPY deploy/image/runtime_lock.py deploy/image/
RUN python deploy/image/runtime_lock.py --build > /tmp/build.txt \
 && python deploy/image/runtime_lock.py > /tmp/runtime.txt \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes -r /tmp/build.txt \
 && python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install --require-hashes -r /tmp/runtime.txt

# Generated code comes from the one pinned script, as in `make protos`.
COPY protos/ protos/
COPY tools/gen_protos.py tools/
RUN /opt/build/bin/python tools/gen_protos.py

COPY libs/common/postd_common/ libs/common/postd_common/
COPY services/ services/

# Byte-code compiled now, checked by hash rather than mtime, so nothing is written at
# run time (PYTHONDONTWRITEBYTECODE is set there as well).
RUN python -m compileall -q --invalidation-mode unchecked-hash \
        /opt/venv/lib libs/common/postd_common libs/protos/postd services

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 postd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin postd
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    POSTD_ENV=production \
    POSTD_IDENTITY_TRUST_DIR=/etc/postd/trust
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/libs/common/postd_common /app/libs/common/postd_common
COPY --from=builder /src/libs/protos/postd /app/libs/protos/postd
WORKDIR /app

# --------------------------------------------------------------------------- services
# Each: the package, where it listens (all interfaces inside the container), its
# identity key path (mounted from a Secret), a probe, and `python -m postd_<service>`.
# gRPC services are probed with the standard grpc.health.v1 check, which needs no
# service identity; the gateway with /readyz (its own database pool), not /healthz,
# which aggregates every backend and would mark every gateway unhealthy for one
# backend's outage.

FROM runtime AS gateway
COPY --from=builder /src/services/gateway/postd_gateway /app/services/gateway/postd_gateway
ENV PYTHONPATH=/app/libs/common:/app/libs/protos:/app/services/gateway \
    POSTD_GATEWAY_HOST=0.0.0.0 \
    POSTD_GATEWAY_PORT=8080 \
    POSTD_IDENTITY_KEY_FILE=/etc/postd/identity/gateway.key
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request as r; sys.exit(r.urlopen('http://127.0.0.1:' + os.environ['POSTD_GATEWAY_PORT'] + '/readyz', timeout=3).status != 200)"]
ENTRYPOINT ["python", "-m", "postd_gateway"]

FROM runtime AS connectors
COPY --from=builder /src/services/connectors/postd_connectors /app/services/connectors/postd_connectors
ENV PYTHONPATH=/app/libs/common:/app/libs/protos:/app/services/connectors \
    POSTD_GRPC_LISTEN=0.0.0.0:50052 \
    POSTD_METRICS_LISTEN=0.0.0.0:9102 \
    POSTD_IDENTITY_KEY_FILE=/etc/postd/identity/connectors.key
EXPOSE 50052 9102
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ['POSTD_GRPC_LISTEN'].rpartition(':')[2]; reply = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)).Check(h.HealthCheckRequest(), timeout=3); sys.exit(reply.status != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["python", "-m", "postd_connectors"]

FROM runtime AS vault
COPY --from=builder /src/services/vault/postd_vault /app/services/vault/postd_vault
ENV PYTHONPATH=/app/libs/common:/app/libs/protos:/app/services/vault \
    POSTD_GRPC_LISTEN=0.0.0.0:50051 \
    POSTD_METRICS_LISTEN=0.0.0.0:9101 \
    POSTD_IDENTITY_KEY_FILE=/etc/postd/identity/vault.key
EXPOSE 50051 9101
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ['POSTD_GRPC_LISTEN'].rpartition(':')[2]; reply = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)).Check(h.HealthCheckRequest(), timeout=3); sys.exit(reply.status != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["python", "-m", "postd_vault"]

FROM runtime AS publisher
COPY --from=builder /src/services/publisher/postd_publisher /app/services/publisher/postd_publisher
ENV PYTHONPATH=/app/libs/common:/app/libs/protos:/app/services/publisher \
    POSTD_GRPC_LISTEN=0.0.0.0:50053 \
    POSTD_METRICS_LISTEN=0.0.0.0:9103 \
    POSTD_IDENTITY_KEY_FILE=/etc/postd/identity/publisher.key
EXPOSE 50053 9103
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ['POSTD_GRPC_LISTEN'].rpartition(':')[2]; reply = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)).Check(h.HealthCheckRequest(), timeout=3); sys.exit(reply.status != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["python", "-m", "postd_publisher"]

FROM runtime AS webhook-router
COPY --from=builder /src/services/webhook-router/postd_webhook_router /app/services/webhook-router/postd_webhook_router
ENV PYTHONPATH=/app/libs/common:/app/libs/protos:/app/services/webhook-router \
    POSTD_GRPC_LISTEN=0.0.0.0:50054 \
    POSTD_METRICS_LISTEN=0.0.0.0:9104 \
    POSTD_IDENTITY_KEY_FILE=/etc/postd/identity/webhook-router.key
EXPOSE 50054 9104
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ['POSTD_GRPC_LISTEN'].rpartition(':')[2]; reply = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)).Check(h.HealthCheckRequest(), timeout=3); sys.exit(reply.status != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["python", "-m", "postd_webhook_router"]

FROM runtime AS health
COPY --from=builder /src/services/health/postd_health /app/services/health/postd_health
ENV PYTHONPATH=/app/libs/common:/app/libs/protos:/app/services/health \
    POSTD_GRPC_LISTEN=0.0.0.0:50055 \
    POSTD_METRICS_LISTEN=0.0.0.0:9105 \
    POSTD_IDENTITY_KEY_FILE=/etc/postd/identity/health.key
EXPOSE 50055 9105
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ['POSTD_GRPC_LISTEN'].rpartition(':')[2]; reply = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)).Check(h.HealthCheckRequest(), timeout=3); sys.exit(reply.status != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["python", "-m", "postd_health"]
