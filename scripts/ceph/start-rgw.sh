#!/usr/bin/env bash
# start-rgw.sh: a throwaway one-node Ceph cluster (Debian 12's Pacific 16.2 packages) with an
# S3 gateway (radosgw) on 127.0.0.1, for tests. Adapted from ../shared/ceph/start-rgw.sh (a
# measured recipe): every port and path is a parameter so several clusters can run at once.
#
# Needs (scripts/install-deps.sh ceph installs them): ceph-mon ceph-osd radosgw ceph-common.
# Run as root. One monitor (msgr2 only), one OSD on MemStore (objects in RAM, gone on stop), one
# radosgw, auth off; all state (conf, mon store, logs, sockets, pid files) under $STATE, nothing
# in /etc/ceph or /var/lib/ceph. The daemons daemonize and leave pid files in $STATE/run/.
#
# Environment:
#   STATE          required: a directory that must not exist yet (created here)
#   RGW_PORT       the S3 port on 127.0.0.1 (required)
#   MON_PORT       the monitor's msgr2 port on 127.0.0.1 (required)
#   OWNER_PID      optional: a watchdog stops the cluster (stop-rgw.sh) once this pid is gone,
#                  so a test process killed with -9 leaves no daemons behind
#   S3_ACCESS_KEY, S3_SECRET_KEY   the S3 user's keys (default testaccesskey / testsecretkey)
#   START_TIMEOUT_S  give up (exit 1, daemons left for stop-rgw.sh) after this long (default 120)
#
# Prints progress lines "[  t s] what" on stderr and, last, "ready <endpoint>" on stdout.
set -euo pipefail

: "${STATE:?set STATE to a new directory}"
: "${RGW_PORT:?set RGW_PORT}"
: "${MON_PORT:?set MON_PORT}"
S3_ACCESS_KEY=${S3_ACCESS_KEY:-testaccesskey}
S3_SECRET_KEY=${S3_SECRET_KEY:-testsecretkey}
START_TIMEOUT_S=${START_TIMEOUT_S:-120}
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=$STATE/ceph.conf
T0=$(date +%s.%N)
elapsed() { awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%.1f", a-b}'; }
log() { printf '[%6ss] %s\n' "$(elapsed)" "$*" >&2; }
deadline() {
  if awk -v e="$(elapsed)" -v m="$START_TIMEOUT_S" 'BEGIN{exit !(e>m)}'; then
    log "gave up after ${START_TIMEOUT_S}s: $1 (logs in $STATE/log)"; exit 1
  fi
}

for bin in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do
  command -v "$bin" >/dev/null || { echo "start-rgw.sh: $bin is missing: run scripts/install-deps.sh ceph" >&2; exit 1; }
done
if [ -e "$STATE" ]; then echo "start-rgw.sh: $STATE exists; stop-rgw.sh removes it" >&2; exit 1; fi
mkdir -p "$STATE"/{run,log,mon.a,osd.0,rgw.a,crash}
uuid() { cat /proc/sys/kernel/random/uuid; }
FSID=$(uuid)

# Test-cluster tuning (all measured on a 2-CPU VM): paxos proposes every 1 s by default, and
# radosgw's first start creates ~5 pools and a bucket's first put 2 more, each waiting on a
# proposal or two; 0.05 s cuts the start from ~15 s to a few. One replica, few PGs.
cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
keyring = $STATE/keyring
run dir = $STATE/run
admin socket = $STATE/run/\$name.asok
pid file = $STATE/run/\$name.pid
log file = $STATE/log/\$name.log
mon cluster log file = $STATE/log/cluster.log
crash dir = $STATE/crash
exporter sock dir = $STATE/run
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mon osd full ratio = .99
mon osd nearfull ratio = .98
osd failsafe full ratio = .995
mon osd backfillfull ratio = .985
paxos propose interval = 0.05
paxos min wait = 0.01
osd memory target = 1073741824

[mon]
mon data = $STATE/mon.\$id
mon allow pool delete = true

[osd]
osd data = $STATE/osd.\$id
osd objectstore = memstore
memstore device bytes = 4294967296
osd class dir = /usr/lib/x86_64-linux-gnu/rados-classes

[client]
# radosgw defaults to auth client required = cephx and ms mon client mode = secure, and then
# hangs at start ("get_initial_auth_request returned -13") with auth off: override both.
auth client required = none
ms mon client mode = crc
ms client mode = crc

[client.rgw.a]
rgw data = $STATE/rgw.\$id
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw dns name = localhost
rgw enable usage log = false
EOF
: > "$STATE/keyring"
[ -n "${OWNER_PID:-}" ] && echo "$OWNER_PID" > "$STATE/owner.pid"

# The watchdog: stops the cluster when the owner is gone, however it went.
if [ -n "${OWNER_PID:-}" ]; then
  setsid bash -c '
    echo $$ > "$0/run/watchdog.pid"
    while kill -0 "$1" 2>/dev/null && [ -d "$0/run" ]; do sleep 1; done
    [ -d "$0/run" ] && STATE="$0" WATCHDOG=1 bash "$2/stop-rgw.sh" >/dev/null 2>&1
  ' "$STATE" "$OWNER_PID" "$HERE" </dev/null >/dev/null 2>&1 &
fi

C="ceph -c $CONF --connect-timeout 20"

log "mkfs mon.a"
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$STATE/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$STATE/monmap" 2>>"$STATE/log/start.log"
ceph-mon -c "$CONF" -i a 2>>"$STATE/log/start.log"
$C mon stat >/dev/null
log "mon answering on $MON_PORT"

OSD_UUID=$(uuid)
OSD_ID=$($C osd new "$OSD_UUID")
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >>"$STATE/log/start.log" 2>&1
ceph-osd -c "$CONF" -i "$OSD_ID" >>"$STATE/log/start.log" 2>&1
until $C osd stat 2>/dev/null | grep -q '1 up'; do deadline "osd.$OSD_ID up"; sleep 0.2; done
log "osd.$OSD_ID up"

radosgw -c "$CONF" -n client.rgw.a 2>>"$STATE/log/start.log"
# Answering HTTP (bash's /dev/tcp: no curl needed): any status line will do.
http_up() {
  timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 && printf "GET / HTTP/1.0\r\n\r\n" >&3 && head -c 12 <&3 | grep -q "^HTTP/1"' "$RGW_PORT" 2>/dev/null
}
until http_up; do deadline "radosgw answering"; sleep 0.2; done
log "radosgw answering on $RGW_PORT"

radosgw-admin -c "$CONF" user create --uid=test --display-name=test \
  --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >/dev/null
log "S3 user test created"
echo "ready http://127.0.0.1:$RGW_PORT"
