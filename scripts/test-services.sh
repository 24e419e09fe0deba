#!/usr/bin/env bash
# Installs (Debian packages) and starts what the test tiers need: Docker engine, Redis, PostgreSQL,
# Chromium, nginx, HAProxy, docker-registry, buildah, debootstrap, bubblewrap, git-lfs (client, for tests). Writes the environment the tests read to $OUT (env.sh).
# Idempotent: a service already answering is left alone. Without root it only reports what it finds.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${SPACEPORT_TEST_STATE:-/var/tmp/spaceport-test}
OUT=${1:-$STATE/env.sh}
mkdir -p "$STATE"
log() { echo "[services] $*" >&2; }

PKGS="docker.io debootstrap redis-server postgresql chromium chromium-driver nginx-light haproxy docker-registry buildah golang-github-containers-common skopeo bubblewrap git git-lfs iproute2 iptables util-linux procps"
install_packages() {
  local missing=()
  for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then log "not root: cannot install ${missing[*]}"; return 0; fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>"$STATE/apt.err" \
    || { log "apt-get failed:"; tail -5 "$STATE/apt.err" >&2; }
}

start_docker() {
  local sock=$STATE/docker.sock
  if [ -S "$sock" ] && DOCKER_HOST=unix://$sock /usr/bin/docker version >/dev/null 2>&1; then
    echo "export SPACEPORT_TEST_DOCKER_HOST=unix://$sock"; return 0
  fi
  [ -x /usr/sbin/dockerd ] || { log "no dockerd"; return 0; }
  mkdir -p "$STATE/docker-data" "$STATE/docker-exec"
  nohup /usr/sbin/dockerd --storage-driver=overlay2 --iptables=true --host="unix://$sock" \
    --data-root="$STATE/docker-data" --exec-root="$STATE/docker-exec" \
    --pidfile="$STATE/docker.pid" >"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 1 100); do
    DOCKER_HOST=unix://$sock /usr/bin/docker version >/dev/null 2>&1 && break
    sleep 0.2
  done
  if DOCKER_HOST=unix://$sock /usr/bin/docker version >/dev/null 2>&1; then
    echo "export SPACEPORT_TEST_DOCKER_HOST=unix://$sock"
  else
    log "dockerd did not start: $(tail -3 "$STATE/dockerd.log")"
  fi
}

start_redis() {
  local port=6391
  if redis-cli -p $port ping >/dev/null 2>&1; then echo "export SPACEPORT_TEST_REDIS_URL=redis://127.0.0.1:$port/0"; return 0; fi
  command -v redis-server >/dev/null || { log "no redis-server"; return 0; }
  redis-server --port $port --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
    --dir "$STATE" --logfile "$STATE/redis.log" --pidfile "$STATE/redis.pid" >/dev/null
  for _ in $(seq 1 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p $port ping >/dev/null 2>&1 && echo "export SPACEPORT_TEST_REDIS_URL=redis://127.0.0.1:$port/0"
}

start_postgres() {
  local ver bindir port=5439 data=$STATE/pg
  ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
  [ -n "$ver" ] || { log "no postgresql"; return 0; }
  bindir=/usr/lib/postgresql/$ver/bin
  local url="postgresql+psycopg://spaceport:spaceport@127.0.0.1:$port/spaceport"
  if ! pg_isready -h 127.0.0.1 -p $port >/dev/null 2>&1; then
    if [ ! -f "$data/PG_VERSION" ]; then
      mkdir -p "$data"; chown -R postgres:postgres "$data" 2>/dev/null
      su postgres -s /bin/sh -c "$bindir/initdb -D '$data' -A trust -U postgres >/dev/null" || { log "initdb failed"; return 0; }
    fi
    chown -R postgres:postgres "$data" 2>/dev/null
    su postgres -s /bin/sh -c "$bindir/pg_ctl -D '$data' -l '$data/log' -w -o '-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200' start >/dev/null" \
      || { log "postgres failed: $(tail -3 "$data/log")"; return 0; }
    psql -h 127.0.0.1 -p $port -U postgres -qc "CREATE ROLE spaceport LOGIN SUPERUSER PASSWORD 'spaceport'" >/dev/null 2>&1
    psql -h 127.0.0.1 -p $port -U postgres -qc "CREATE DATABASE spaceport OWNER spaceport" >/dev/null 2>&1
  fi
  echo "export SPACEPORT_TEST_PG_URL=$url"
  echo "export SPACEPORT_TEST_PG_BIN=$bindir SPACEPORT_TEST_PG_DATA=$data SPACEPORT_TEST_PG_PORT=$port"
}

main() {
  install_packages
  {
    echo "# written by scripts/test-services.sh"
    start_docker
    start_redis
    start_postgres
    [ -x /usr/bin/chromium ] && echo "export SPACEPORT_TEST_CHROMIUM=/usr/bin/chromium"
    echo "export SPACEPORT_TEST_STATE=$STATE"
  } >"$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
  cat "$OUT" >&2
}
main "$@"
