#!/usr/bin/env bash
# `scripts/test-diagnostics.sh [FAILURES_LOG]`: printed by `make test` when the suite fails or runs out of time:
# the failures as they happened and the machine's state, so a CI log that only shows F and E says whether the
# disk filled, memory ran out or a test service died.
set -u
STATE=${SPACEPORT_TEST_STATE:-/var/tmp/spaceport-test}
FAILURES=${1:-}
section() { echo; echo "== $*"; }
if [ -n "$FAILURES" ] && [ -s "$FAILURES" ]; then
  section "failures, in the order they happened ($(wc -l <"$FAILURES") in all; the first ones matter)"
  head -25 "$FAILURES" | cut -c1-300
fi
section "disk"
df -h / /tmp /var/tmp 2>/dev/null | uniq
du -sh /tmp/pytest-of-* "$STATE"/docker-data 2>/dev/null
section "memory"
free -m
section "load"
cat /proc/loadavg
section "test Docker engine"
if [ -n "${SPACEPORT_TEST_DOCKER_HOST:-}" ]; then
  DOCKER_HOST=$SPACEPORT_TEST_DOCKER_HOST timeout 20 docker system df 2>&1 | head -8
  DOCKER_HOST=$SPACEPORT_TEST_DOCKER_HOST timeout 20 docker ps -a --format '{{.Names}} {{.Status}}' 2>&1 | head -10
fi
tail -5 "$STATE/dockerd.log" 2>/dev/null
section "services"
[ -z "${SPACEPORT_TEST_REDIS_URL:-}" ] || redis-cli -u "$SPACEPORT_TEST_REDIS_URL" ping 2>&1 | head -1
pg_isready -h 127.0.0.1 -p "${SPACEPORT_TEST_PG_PORT:-5439}" 2>&1
section "biggest processes"
ps -eo rss,etime,args --sort=-rss 2>/dev/null | head -8 | cut -c1-160
exit 0
