#!/usr/bin/env bash
# The README's demo: a 3-node skiff cluster on this machine (network namespaces
# only), a cross-node pod ping and TCP check, the lab's status, then `down` on exit
# unless --keep. Needs root.
#   bash scripts/lab.sh [--keep] [-f lab.yaml] [--name NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
args=()
name=skiff
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --name) name=$2; args+=(--name "$2"); shift ;;
    -f) args+=(-f "$2"); shift ;;
    *) echo "usage: $0 [--keep] [-f lab.yaml] [--name NAME]" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "lab.sh: needs root (creates network namespaces)" >&2; exit 1; }
skiff=bin/skiff
node=node_modules/.bin/node

if [ $keep -eq 0 ]; then trap '"$skiff" lab down --name "$name" >/dev/null 2>&1 || true' EXIT; fi

"$skiff" lab up --nodes 3 "${args[@]}"

state=/run/skiff/lab/$name/state.json
# A client on one node, a web pod on another.
client=$(jq -r '.pods | to_entries[] | select(.key=="dev/client") | .value.node' "$state")
target=$(jq -r --arg n "$client" '.pods | to_entries[] | select(.key|startswith("dev/web-")) | select(.value.node!=$n) | .value.ip' "$state" | head -1)
echo
echo "== dev/client (on $client) pings a web pod on another node ($target)"
"$skiff" lab exec --name "$name" dev/client -- ping -c 3 -W 2 "$target"
echo
echo "== dev/client connects to $target:80 (the built-in server answers with its name)"
"$skiff" lab exec --name "$name" dev/client -- "$node" -e "require('net').connect(80,'$target').on('data',d=>process.stdout.write(d)).on('error',e=>{console.error(e.message);process.exit(1)})"
echo
"$skiff" lab status --name "$name"
if [ $keep -eq 1 ]; then echo; echo "lab $name kept; remove it with: bin/skiff lab down --name $name"; fi
