# The connector image: one console script, `pinwheel-connector gateway|processor|topics|...`.
# PYTHON_IMAGE is the base (python:3.11-slim; docker/local-images.sh builds a stand-in where it cannot be pulled).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# The pinned runtime dependencies first: this layer is rebuilt only when pyproject.toml or constraints.txt change.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > requirements.txt \
    && pip wheel --no-cache-dir -q -c constraints.txt -r requirements.txt --wheel-dir /wheels/deps
# Then the connector itself (no benchmarks, chaos runs or tests: they stay out of the runtime image).
COPY README.md ./
COPY common ./common
COPY connector ./connector
COPY gateway ./gateway
COPY processors ./processors
COPY schemas ./schemas
COPY simulator ./simulator
COPY operate ./operate
RUN pip wheel --no-cache-dir -q --no-deps --wheel-dir /wheels/app .

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 connector && mkdir /data && chown connector /data
COPY --from=build /wheels/deps /wheels/deps
RUN pip install --no-cache-dir -q --no-index /wheels/deps/*.whl && rm -rf /wheels
COPY --from=build /wheels/app /wheels/app
RUN pip install --no-cache-dir -q --no-index --no-deps /wheels/app/*.whl && rm -rf /wheels
COPY docker/healthcheck.py /usr/local/lib/pinwheel-healthcheck.py
USER connector
WORKDIR /data
# /livez of the gateway or the processors, whichever this container runs (docker/healthcheck.py).
HEALTHCHECK --interval=10s --timeout=30s --start-period=120s --retries=3 CMD ["python", "/usr/local/lib/pinwheel-healthcheck.py"]
ENTRYPOINT ["pinwheel-connector"]
CMD ["--help"]
