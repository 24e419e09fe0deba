#!/usr/bin/env bash
# Best effort: install the Debian packages `spaceport serve` uses on this host (git for hosting,
# bubblewrap + iproute2 + iptables for the local runtime's sandbox, haproxy for the data plane). Without root it only reports.
set -u
need=()
command -v git >/dev/null || need+=(git)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v nsenter >/dev/null || need+=(util-linux)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[spaceport] installing ${need[*]} (sandbox for the local runtime, data plane)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || echo "[spaceport] could not install ${need[*]}; Spaceport will explain the risk at start" >&2
else
  echo "[spaceport] missing ${need[*]}: install them (as root) so apps run sandboxed and HAProxy carries their traffic" >&2
fi
exit 0
