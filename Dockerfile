# The connector image: one console script, `pinwheel-connector gateway|processor|topics|...`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY connector ./connector
COPY gateway ./gateway
COPY processors ./processors
COPY schemas ./schemas
COPY simulator ./simulator
COPY bench ./bench
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 connector && mkdir /data && chown connector /data
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --no-index --find-links /wheels -c /tmp/constraints.txt pinwheel-kafka-connector \
    && rm -rf /wheels /tmp/constraints.txt
USER connector
WORKDIR /data
ENTRYPOINT ["pinwheel-connector"]
CMD ["--help"]
