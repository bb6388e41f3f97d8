#!/usr/bin/env bash
# stop-rgw.sh: stops the daemons start-rgw.sh started under $STATE (by the pids in their pid
# files, and only if that pid still runs a Ceph daemon whose command line names $STATE), then
# removes $STATE. Safe to run twice, on a half-started cluster, or on nothing.
#   STATE        required
#   KEEP_STATE=1 keeps $STATE (its logs) instead of removing it
set -uo pipefail
: "${STATE:?set STATE}"
[ -d "$STATE" ] || exit 0

# A pid from a pid file is ours only while /proc says it is a daemon of this cluster.
ours() {
  local pid=$1
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF -e "$STATE/" -e "$STATE "
}

stop_pid() {
  local name=$1 pid=$2
  ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do ours "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  for _ in $(seq 1 20); do ours "$pid" || return 0; sleep 0.1; done
  echo "stop-rgw.sh: $name ($pid) did not stop" >&2
}

# radosgw first (it holds client sessions), the monitor last.
for name in client.rgw.a osd.0 mon.a; do
  f=$STATE/run/$name.pid
  [ -f "$f" ] && stop_pid "$name" "$(cat "$f")"
done
# A daemon that died before writing its pid file, or a second radosgw-admin: any process whose
# command line names this cluster's conf.
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = $$ ] && continue
  if tr '\0' ' ' 2>/dev/null < "$p/cmdline" | grep -qF -- "-c $STATE/ceph.conf "; then
    stop_pid "pid" "$pid"
  fi
done
# The watchdog, unless it is the one running this.
if [ "${WATCHDOG:-0}" != 1 ] && [ -f "$STATE/run/watchdog.pid" ]; then
  wpid=$(cat "$STATE/run/watchdog.pid")
  ours "$wpid" && kill -TERM "$wpid" 2>/dev/null
fi
[ "${KEEP_STATE:-0}" = 1 ] || rm -rf "$STATE"
exit 0
