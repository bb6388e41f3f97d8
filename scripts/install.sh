#!/usr/bin/env bash
# make install: puts `logdisk` on the system PATH as a small wrapper that runs this checkout's
# dist/ with this Node (mount(8) runs helpers with no PATH, so the wrapper names Node by its
# absolute path and gives the daemon a PATH), and installs the systemd unit template
# logdisk@.service and the docs. PREFIX (/usr/local), UNITDIR (/etc/systemd/system) and
# DESTDIR (staging) may be set; `scripts/install.sh uninstall` removes what install put there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
unitdir=${UNITDIR:-/etc/systemd/system}
dest=${DESTDIR:-}
bin="$dest$prefix/bin/logdisk"
unit="$dest$unitdir/logdisk@.service"
docs="$dest$prefix/share/doc/logdisk"
if [ "${1:-install}" = uninstall ]; then
  rm -f "$bin" "$unit" "$dest$prefix/share/man/man1/logdisk.1"
  rm -rf "$docs"
  echo "removed $bin, $unit, $docs"
  exit 0
fi
node=$(command -v node)
[ -f "$repo/dist/src/cli/main.js" ] || { echo "build first: make build" >&2; exit 1; }
mkdir -p "$(dirname "$bin")" "$(dirname "$unit")" "$docs"
tmp=$(mktemp "$(dirname "$bin")/.logdisk.XXXXXX")
cat > "$tmp" <<WRAPPER
#!/bin/sh
# logdisk, installed by make install from $repo
export PATH="\${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"
exec "$node" "$repo/dist/src/cli/main.js" "\$@"
WRAPPER
chmod 755 "$tmp"
mv -f "$tmp" "$bin"
sed -e "s#/usr/local/bin/logdisk#$prefix/bin/logdisk#g" -e "s#/usr/local/share/doc/logdisk#$prefix/share/doc/logdisk#g" \
  "$repo/examples/logdisk@.service" > "$unit.tmp"
mv -f "$unit.tmp" "$unit"
cp "$repo/README.md" "$repo/docs/CLI.md" "$docs/"
man1="$dest$prefix/share/man/man1"
mkdir -p "$man1" && cp "$repo/docs/logdisk.1" "$man1/logdisk.1"
if [ -z "$dest" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
echo "installed $bin (runs $repo/dist with $node), $unit, $docs"
