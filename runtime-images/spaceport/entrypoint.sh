#!/bin/sh
# Spaceport's image runs the `spaceport` command with its arguments: `docker run IMAGE serve` and the
# Kubernetes manifests' `args: [spaceport, serve, ...]` (a full command line) both run `spaceport serve`.
if [ "$1" = spaceport ]; then shift; fi
exec /opt/spaceport/bin/spaceport "$@"
