#!/usr/bin/env bash
# The hearing benchmark against git ref OLD's whole stack, then this tree's, on one machine at one
# time (these hosts differ by ±30 % run to run). Each side runs its own servers: the ASR protocol
# may differ between them.
#
#     scripts/hearing-compare.sh OLD [HEARING ARGS...]   # e.g. scripts/hearing-compare.sh main~3 --clips 20
#
# Prints each side's `benchmarks.hearing` lines under "== hearing old|new ==". Logs in logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
old_ref=${1:?usage: scripts/hearing-compare.sh OLD [HEARING ARGS...]}
shift
py=$PWD/.venv/bin/python
old=$(mktemp -d)/old
git worktree add -q --detach "$old" "$old_ref"
stack=
cleanup() {
    [ -n "$stack" ] && kill "$stack" 2>/dev/null && wait "$stack" 2>/dev/null || true
    git worktree remove --force "$old"
}
trap cleanup EXIT

mkdir -p logs
for side in old new; do
    tree=$PWD
    [ "$side" = old ] && tree=$old
    (cd "$tree" && exec "$py" -m servers.launch >"$OLDPWD/logs/hearing-compare-$side.log" 2>&1) &
    stack=$!
    until curl -fs http://127.0.0.1:7860/status >/dev/null; do sleep 2; done
    echo "== hearing $side =="
    "$py" -m benchmarks.hearing "$@"
    kill "$stack"
    wait "$stack" 2>/dev/null || true
    stack=
done
