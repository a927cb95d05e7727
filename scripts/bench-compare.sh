#!/usr/bin/env bash
# Old and new side by side in one run: the LLM, tools and conversation benchmarks of git ref OLD and of
# this tree, alternating, against the same model servers (the launcher's, --no-bot), so a refactor
# or a change is judged on one machine at one time (these hosts differ by ±30 % run to run).
#
#     scripts/bench-compare.sh OLD [ROUNDS]      # e.g. scripts/bench-compare.sh main~5 2
#
# Prints each benchmark's summary under "== <benchmark> old|new (round N) ==". Logs in logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
old_ref=${1:?usage: scripts/bench-compare.sh OLD [ROUNDS]}
rounds=${2:-1}
py=$PWD/.venv/bin/python
old=$(mktemp -d)/old
git worktree add -q --detach "$old" "$old_ref"
servers=
bot=
cleanup() {
    [ -n "$bot" ] && kill "$bot" 2>/dev/null || true
    [ -n "$servers" ] && kill "$servers" 2>/dev/null && wait "$servers" 2>/dev/null || true
    git worktree remove --force "$old"
}
trap cleanup EXIT

mkdir -p logs
"$py" -m servers.launch --no-bot >logs/bench-compare-servers.log 2>&1 &
servers=$!
for url in http://127.0.0.1:8080/health http://127.0.0.1:8001/health http://127.0.0.1:8002/health; do
    until curl -fs "$url" >/dev/null; do sleep 2; done
done

run_bot() {  # the bot of tree $1 on port 7860, until its /status answers
    (cd "$1" && exec "$py" bot.py -t webrtc >"$OLDPWD/logs/bench-compare-bot.log" 2>&1) &
    bot=$!
    until curl -fs http://127.0.0.1:7860/status >/dev/null; do sleep 1; done
}

for round in $(seq "$rounds"); do
    for side in old new; do
        tree=$PWD
        [ "$side" = old ] && tree=$old
        echo "== llm $side (round $round) =="
        (cd "$tree" && "$py" -m benchmarks.llm --url http://127.0.0.1:8002)
        echo "== tools $side (round $round) =="
        (cd "$tree" && "$py" -m benchmarks.tools --url http://127.0.0.1:8002)
        run_bot "$tree"
        echo "== conversation $side (round $round) =="
        (cd "$tree" && "$py" -m benchmarks.conversation)
        kill "$bot"
        wait "$bot" 2>/dev/null || true
        bot=
    done
done
