# The connector image: one console script, `pinwheel-connector gateway|processor|topics|...`.
# PYTHON_IMAGE is the base (python:3.11-slim; docker/local-images.sh builds a stand-in where it cannot be pulled).
ARG PYTHON_IMAGE=python:3.11-slim

# The connector's wheel: the product packages only (no benchmarks, chaos runs or tests; pyproject.toml says which),
# the processors' hot path compiled by mypyc (setup.py): a C compiler, Python's headers, the locked libraries and the
# pinned mypy here, none of them in the image that runs but the libraries.
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && headers=$(python -c 'import sysconfig, pathlib; print("" if (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").exists() else "python3-dev")') \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev $headers >/dev/null \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# mypyc type-checks the modules it compiles against the libraries they use: the runtime's, as locked.
COPY requirements.lock constraints.txt ./
RUN pip install --no-cache-dir -q --require-hashes -r requirements.lock \
    && pip install --no-cache-dir -q -c constraints.txt mypy setuptools wheel
COPY pyproject.toml setup.py README.md LICENSE ./
COPY common ./common
COPY connector ./connector
COPY gateway ./gateway
COPY processors ./processors
COPY schemas ./schemas
COPY simulator ./simulator
COPY operate ./operate
RUN PINWHEEL_COMPILE=1 pip wheel --no-cache-dir -q --no-deps --no-build-isolation --wheel-dir /wheels/app .

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
