#!/usr/bin/env bash
# Installs the real DFSP connector `@mojaloop/sdk-scheme-adapter` from the npm
# registry into a cache OUTSIDE the repository, for the integration test
# tests/tests/sdk_adapter.rs.
#
# Usage:
#   bash scripts/install-sdk-adapter.sh          # install (no-op when cached)
#   bash scripts/install-sdk-adapter.sh --print  # print the install dir only
#
# The package lands in
#   ${MOJASWITCH_NPM_CACHE:-$HOME/.cache/mojaswitch}/sdk-scheme-adapter-<version>
# and its entry point is
#   <dir>/node_modules/@mojaloop/sdk-scheme-adapter/src/index.js
# A marker file `.installed` is written only after a complete, verified
# install, so an interrupted install is redone on the next run. A cold install
# takes 5-20 minutes (about 330 MB; most of it compiles grpc's C++ sources);
# a cached one returns at once.
set -euo pipefail

VERSION=18.0.2
PACKAGE=@mojaloop/sdk-scheme-adapter
CACHE_ROOT=${MOJASWITCH_NPM_CACHE:-$HOME/.cache/mojaswitch}
DIR=$CACHE_ROOT/sdk-scheme-adapter-$VERSION
ENTRY=$DIR/node_modules/@mojaloop/sdk-scheme-adapter/src/index.js
MARKER=$DIR/.installed

step() { printf '==> [sdk-adapter] %s\n' "$*"; }
die() {
    printf 'ERROR: [sdk-adapter] %s\n' "$*" >&2
    exit 1
}

if [[ "${1:-}" == "--print" ]]; then
    echo "$DIR"
    exit 0
fi

if [[ -f "$MARKER" && -f "$ENTRY" ]]; then
    step "$PACKAGE@$VERSION already installed in $DIR"
    exit 0
fi

command -v node >/dev/null 2>&1 || die "node not found (Node.js >= 18 is needed)"
command -v npm >/dev/null 2>&1 || die "npm not found"
for tool in make g++ python3; do
    command -v "$tool" >/dev/null 2>&1 ||
        step "warning: $tool not found; the native grpc dependency may fail to build"
done
step "node $(node --version), npm $(npm --version)"

mkdir -p "$DIR"
rm -f "$MARKER"
if [[ ! -f "$DIR/package.json" ]]; then
    cat >"$DIR/package.json" <<EOF
{
  "name": "mojaswitch-sdk-adapter-cache",
  "private": true,
  "description": "Installed by mojaswitch scripts/install-sdk-adapter.sh",
  "version": "0.0.0"
}
EOF
fi

step "npm install $PACKAGE@$VERSION into $DIR (a cold install takes several minutes)"
start=$SECONDS
# Not --ignore-scripts: the adapter loads grpc's native addon at start, and
# grpc's install step builds it (there is no prebuilt binary to fetch here).
(
    cd "$DIR"
    # node-gyp builds grpc's C++ sources with $JOBS parallel jobs.
    JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)} npm install --no-audit --no-fund --loglevel=error \
        --save-exact "$PACKAGE@$VERSION" </dev/null
) || die "npm install $PACKAGE@$VERSION failed"

[[ -f "$ENTRY" ]] || die "entry point $ENTRY missing after install"
installed=$(node -p "require('$DIR/node_modules/@mojaloop/sdk-scheme-adapter/package.json').version")
[[ "$installed" == "$VERSION" ]] || die "installed version $installed, expected $VERSION"

# The adapter loads its whole module graph at start, including the native
# `grpc` addon of @mojaloop/event-sdk (built from source above: no prebuilt
# binary can be downloaded here). Load it the same way, with the two settings
# it requires, from a folder without a `.env` (servers are not started).
step "checking that the adapter's modules load"
check_dir=$(mktemp -d)
if ! (cd "$check_dir" && PEER_ENDPOINT=127.0.0.1:1 BACKEND_ENDPOINT=127.0.0.1:1 \
    node -e "require(process.argv[1])" "$ENTRY" </dev/null); then
    rm -rf "$check_dir"
    die "the adapter's modules do not load (see above); a C++ toolchain (make, g++, python3) is needed to build grpc"
fi
rm -rf "$check_dir"

date -u +%Y-%m-%dT%H:%M:%SZ >"$MARKER"
step "installed $PACKAGE@$VERSION in $((SECONDS - start))s"
