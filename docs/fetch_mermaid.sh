#!/usr/bin/env bash
# Vendors mermaid for the docs site: the page must render its diagrams with no network, so
# the file comes from the npm registry once (npm pack), pinned by version and by sha256.
set -euo pipefail

VERSION=11.4.1
SHA256=a43bc1afd446f9c4cc66ac5dd45d02e8d65e26fc5344ec0ef787f88d6ddb6f9e
TARGET="$(cd "$(dirname "$0")" && pwd)/javascripts/mermaid.min.js"

if [[ -f "$TARGET" ]] && echo "$SHA256  $TARGET" | sha256sum --check --status; then
  touch "$TARGET"  # already the pinned file: newer than this script, so make stops asking
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "npm is needed once to fetch mermaid $VERSION (apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "mermaid@$VERSION" >/dev/null)
tar -xzf "$work/mermaid-$VERSION.tgz" -C "$work" package/dist/mermaid.min.js
if ! echo "$SHA256  $work/package/dist/mermaid.min.js" | sha256sum --check --status; then
  echo "mermaid $VERSION: sha256 differs from the pinned $SHA256; not installed" >&2
  exit 1
fi
mkdir -p "$(dirname "$TARGET")"
mv "$work/package/dist/mermaid.min.js" "$TARGET"
echo "mermaid $VERSION -> $TARGET"
