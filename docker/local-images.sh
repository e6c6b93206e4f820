#!/usr/bin/env bash
# Builds, from Debian packages and Maven Central jars only, the base images that docker-compose.yml and the
# container tests need where no container registry is reachable. Our own names, never the official ones:
#   pinwheel-local/debian:bookworm    mmdebstrap (Debian's mirror) + docker import
#   pinwheel-local/python:3.11        Debian's python3.11 in a venv, in place of python:3.11-slim
#   pinwheel-local/kafka:<version>    the local broker's Maven Central jars on Debian's JRE, in place of
#                                     apache/kafka:<version> (same environment interface, see docker/kafka/run)
# An image that exists already is kept (PINWHEEL_REBUILD_IMAGES=1 rebuilds them). Needs a Docker engine
# (docker/engine.sh) and, for the Debian base, root and mmdebstrap (installed with apt-get when missing).
# Prints PYTHON_IMAGE=... KAFKA_IMAGE=..., the variables docker-compose.yml takes:
#   export $(docker/local-images.sh) && docker compose up --build
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PINWHEEL_IMAGE_PREFIX:-pinwheel-local}
PYTHON=${PYTHON:-.venv/bin/python}
KAFKA_VERSION=$("$PYTHON" -c 'from connector.local_kafka import LocalKafkaSettings; print(LocalKafkaSettings().version)')
DEBIAN_IMAGE=$PREFIX/debian:bookworm
PYTHON_IMAGE=$PREFIX/python:3.11
KAFKA_IMAGE=$PREFIX/kafka:$KAFKA_VERSION

# Standard output carries the one result line alone (it is read by `export $(...)`): everything the builds print,
# Maven's colour codes included, goes to standard error.
exec 3>&1 1>&2

say() { echo "[images] $*" >&2; }

exists() {
  [[ -z "${PINWHEEL_REBUILD_IMAGES:-}" ]] && docker image inspect "$1" >/dev/null 2>&1
}

timed() {  # timed IMAGE COMMAND...: run the build, report its duration
  local image=$1 started=$SECONDS
  shift
  say "building $image ..."
  "$@"
  say "built $image in $((SECONDS - started)) s"
}

debian_base() {
  command -v mmdebstrap >/dev/null || {
    [[ $(id -u) == 0 ]] || { say "mmdebstrap is missing (apt-get install mmdebstrap, as root)"; exit 1; }
    say "installing mmdebstrap"
    apt-get install -y -q mmdebstrap >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q mmdebstrap >/dev/null; }
  }
  local tarball
  tarball=$(mktemp --suffix=.tar)
  # minbase: essential + apt; no docs, manuals or translations, as in Debian's own slim images.
  mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --aptopt='Acquire::Languages "none"' \
    bookworm "$tarball" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$DEBIAN_IMAGE" >/dev/null
  rm -f "$tarball"
}

python_base() {
  local context
  context=$(mktemp -d)
  cp docker/python/Dockerfile "$context/"
  mkdir "$context/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$context/ca-certificates/" 2>/dev/null || true
  docker build -q --force-rm --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -t "$PYTHON_IMAGE" "$context" >/dev/null
  rm -rf "$context"
}

kafka_image() {
  local libs context
  libs=$("$PYTHON" -c 'from connector.local_kafka import LocalKafka; from connector.local_kafka import LocalKafkaSettings
print(LocalKafka(LocalKafkaSettings()).ensure_jars())')
  context=$(mktemp -d)
  cp -r docker/kafka/. "$context/"
  cp -r "$libs" "$context/libs"
  # The broker's jars plus kafka-tools alone (kafka-broker-api-versions.sh, kafka-topics.sh: the healthcheck).
  (cd "$context" && mvn -B -q -Dstyle.color=never dependency:copy "-Dartifact=org.apache.kafka:kafka-tools:$KAFKA_VERSION" \
    -DoutputDirectory="$context/libs")
  docker build -q --force-rm --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -t "$KAFKA_IMAGE" "$context" >/dev/null
  rm -rf "$context"
}

exists "$DEBIAN_IMAGE" || timed "$DEBIAN_IMAGE" debian_base
exists "$PYTHON_IMAGE" || timed "$PYTHON_IMAGE" python_base
exists "$KAFKA_IMAGE" || timed "$KAFKA_IMAGE" kafka_image
say "ready: $PYTHON_IMAGE $KAFKA_IMAGE"
echo "PYTHON_IMAGE=$PYTHON_IMAGE KAFKA_IMAGE=$KAFKA_IMAGE" >&3  # for `export $(docker/local-images.sh)`
