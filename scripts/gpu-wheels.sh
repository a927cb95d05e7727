#!/usr/bin/env bash
# Fetch the wheels of scripts/gpu-wheels.txt into .whl/ (git-ignored), for the borrowed GPU machine:
# Python 3.12 on x86-64 Linux with no network, where scripts/gpu-check.sh installs them with
#   pip install --no-index --no-deps --target ... .whl/*.whl
# Idempotent: wheels already there are kept, wheels not in the list (say an old version) are removed,
# since two versions of one package stop that install. Run it where PyPI is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
list=scripts/gpu-wheels.txt
dest=.whl
limit_mb=${GPU_WHEELS_LIMIT_MB:-40}
pip=("${PYTHON:-python3}" -m pip)
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

exclude=$(git rev-parse --git-path info/exclude)
grep -qxF "/$dest/" "$exclude" 2>/dev/null || echo "/$dest/" >>"$exclude"
mkdir -p "$dest"

# A distribution name as wheel file names spell it, for comparing "hydra-core" with "hydra_core".
norm() { tr 'A-Z' 'a-z' <<<"$1" | sed -E 's/[-_.]+/_/g'; }

declare -A wanted=()
while read -r line; do
  line=${line%%#*}
  line=${line//[[:space:]]/}
  [ -n "$line" ] || continue
  [[ $line == *==* ]] || { echo "not pinned: $line" >&2; exit 1; }
  wanted["$(norm "${line%%==*}")==${line#*==}"]=$line
done <"$list"

declare -A have=()
for whl in "$dest"/*.whl; do
  [ -e "$whl" ] || continue
  IFS=- read -r name version _ <<<"$(basename "$whl")"
  key="$(norm "$name")==$version"
  if [ -n "${wanted[$key]:-}" ] && [ -z "${have[$key]:-}" ]; then
    have[$key]=1
  else
    echo "removing $(basename "$whl") (not in $list)"
    rm -f "$whl"
  fi
done

for key in "${!wanted[@]}"; do
  [ -z "${have[$key]:-}" ] || continue
  spec=${wanted[$key]}
  echo "fetching $spec"
  if ! err=$("${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dest" "$spec" 2>&1); then
    # Some pure-Python packages (antlr4-python3-runtime 4.9.3) exist only as source: build the wheel
    # here, and keep it only if it is pure Python, so it runs on any Python 3.
    build=$(mktemp -d)
    "${pip[@]}" wheel -q --no-deps -w "$build" "$spec" >/dev/null 2>&1 || true
    built=("$build"/*.whl)
    if [[ ${built[0]} != *-none-any.whl ]]; then
      echo "$err" >&2
      echo "$spec: no wheel for CPython 3.12 manylinux x86-64, and no pure-Python build" >&2
      exit 1
    fi
    mv "${built[0]}" "$dest/"
    rm -rf "$build"
  fi
done

count=$(find "$dest" -maxdepth 1 -type f -name '*.whl' | wc -l)
[ "$count" -eq "${#wanted[@]}" ] || { echo "expected ${#wanted[@]} wheels in $dest, found $count" >&2; exit 1; }
bytes=$(find "$dest" -maxdepth 1 -type f -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s}')
mb=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
echo "$count wheels in $dest: $mb MiB"
awk -v b="$bytes" -v l="$limit_mb" 'BEGIN {exit !(b <= l * 1048576)}' \
  || { echo "over the ${limit_mb} MiB budget for carried wheels" >&2; exit 1; }
