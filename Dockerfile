# The connector image: one console script, `pinwheel-connector gateway|processor|topics|...`.
# PYTHON_IMAGE is the base (python:3.11-slim; docker/local-images.sh builds a stand-in where it cannot be pulled).
ARG PYTHON_IMAGE=python:3.11-slim

# The connector's wheel: the product packages only (no benchmarks, chaos runs or tests; pyproject.toml says which).
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY common ./common
COPY connector ./connector
COPY gateway ./gateway
COPY processors ./processors
COPY schemas ./schemas
COPY simulator ./simulator
COPY operate ./operate
RUN pip wheel --no-cache-dir -q --no-deps --wheel-dir /wheels/app .

FROM ${PYTHON_IMAGE}
# /data/state exists in the image, owned by the user: a named volume mounted there (docker/processor-state.yml)
# starts with that owner.
RUN useradd --create-home --uid 10001 connector && mkdir -p /data/state && chown -R connector /data
# The runtime dependencies first, exactly as locked (every file's hash checked; `make lock` writes the file): this
# layer is rebuilt only when requirements.lock changes, not on a code change.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir -q --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock
# Then the connector itself, without dependencies of its own choosing.
COPY --from=build /wheels/app /wheels/app
RUN pip install --no-cache-dir -q --no-index --no-deps /wheels/app/*.whl && rm -rf /wheels && pip check
COPY docker/healthcheck.py /usr/local/lib/pinwheel-healthcheck.py
USER connector
WORKDIR /data
# /livez of the gateway or the processors, whichever this container runs (docker/healthcheck.py).
HEALTHCHECK --interval=10s --timeout=30s --start-period=120s --retries=3 CMD ["python", "/usr/local/lib/pinwheel-healthcheck.py"]
ENTRYPOINT ["pinwheel-connector"]
CMD ["--help"]
