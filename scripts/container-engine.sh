#!/usr/bin/env bash
# Make Debian's container engine usable here for the compose check (tests/test_compose_stack.py):
# install docker.io, docker-compose and mmdebstrap when missing, start dockerd when none answers.
# Needs root; says why in one line and exits 0 otherwise (the check is then skipped, with the reason).
set -euo pipefail
if docker info >/dev/null 2>&1 && command -v mmdebstrap >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "container-engine: not root; the compose check will be skipped"; exit 0; fi
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "container-engine: installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "container-engine: starting dockerd (log: /var/log/dockerd-ci.log)"
  nohup dockerd >/var/log/dockerd-ci.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null 2>&1 || echo "container-engine: dockerd did not start: $(tail -1 /var/log/dockerd-ci.log)"
