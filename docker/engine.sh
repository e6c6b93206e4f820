#!/usr/bin/env bash
# Makes sure a Docker engine and a compose CLI answer, for the container tests (make docker-engine, .ci/run).
#   - an engine at PINWHEEL_DOCKER_HOST (else DOCKER_HOST, else the default socket) that answers is used as is;
#   - none, and root on Debian: apt-get installs docker.io and docker-compose where missing, and dockerd is
#     started in the background on that socket (log: var/dockerd.log), then waited for until `docker info` answers;
#   - otherwise it says what is missing and exits 3, so the caller skips the container tests, loudly.
# Prints `DOCKER_HOST=...` on success: eval it, or export it yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
host=${PINWHEEL_DOCKER_HOST:-${DOCKER_HOST:-unix:///var/run/docker.sock}}
say() { echo "[docker-engine] $*" >&2; }
missing() { say "NO CONTAINER ENGINE: $*"; exit 3; }

answers() { command -v docker >/dev/null && DOCKER_HOST=$host timeout 10 docker info >/dev/null 2>&1; }
compose_cli() {
  if docker compose version >/dev/null 2>&1; then echo "docker compose"
  elif command -v docker-compose >/dev/null; then echo "docker-compose"
  fi
}

if ! answers || [[ -z "$(compose_cli)" ]]; then
  need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  [[ -n "$(compose_cli)" ]] || need+=(docker-compose)
  if ((${#need[@]})); then
    [[ $(id -u) == 0 && -f /etc/debian_version ]] || missing "${need[*]} not installed (and not root on Debian to install them)"
    say "installing ${need[*]} (apt-get)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  fi
fi
if ! answers; then
  [[ $(id -u) == 0 ]] || missing "no engine answers at $host and starting dockerd needs root"
  [[ $host == unix://* ]] || missing "no engine answers at $host (only a unix socket is started here)"
  socket=${host#unix://}
  name=$(basename "$socket" .sock)
  mkdir -p var
  say "starting dockerd on $host (log: var/dockerd.log)"
  # Its own pid file and exec root per socket, so it never touches another daemon's; setsid: it outlives make.
  setsid dockerd -H "$host" --pidfile "/run/$name.pid" --exec-root "/run/$name-exec" >var/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 60); do
    answers && break
    sleep 1
  done
  answers || { tail -20 var/dockerd.log >&2; missing "dockerd did not answer at $host within 60 s"; }
fi
say "engine: $(DOCKER_HOST=$host docker version --format '{{.Server.Version}}') at $host; compose: $(compose_cli)"
echo "DOCKER_HOST=$host"
