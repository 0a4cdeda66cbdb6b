#!/usr/bin/env bash
# A single-node OpenStack Swift with its S3 API (s3api), from Debian's packages, as a real
# S3-compatible object store for tests and the dev stack. Everything of one instance lives
# under BASE: rings and configs (etc/), data (srv/), pid files (run/), logs (log/). Several
# instances can run at once on different ports.
#
#   swift.sh install     installs the Debian packages when missing (root; idempotent)
#   swift.sh up BASE PROXY_PORT OBJECT_PORT CONTAINER_PORT ACCOUNT_PORT MEMCACHED_PORT
#                        starts memcached and the 4 servers (idempotent), waits until all are
#                        healthy, then creates the buckets named in $SWIFT_BUCKETS
#                        (space-separated; default: ferrotrove-snapshots)
#   swift.sh down BASE   stops every process that `up` started under BASE
#
# S3: endpoint http://127.0.0.1:PROXY_PORT, path-style, region us-east-1, access key
# `test:tester`, secret `testing`. These credentials (tempauth) are fixed on purpose: the
# store listens on 127.0.0.1 only and is for local tests and development, never for
# anything that holds real data. Swift 2.30 has no conditional PUT (use
# S3ConditionalPut::Disabled); buckets must be made beforehand (here, or with the native API).
# Notes and pitfalls: shared/reference/swift-s3.md.
set -euo pipefail

PACKAGES=(swift swift-proxy swift-account swift-container swift-object python3-swiftclient memcached)
SERVICES=(memcached object container account proxy)
S3_USER=test:tester
S3_KEY=testing

log() { printf '[swift] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# --- install

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
  command -v curl >/dev/null || echo curl
}

cmd_install() {
  [ -n "$(missing_packages)" ] || return 0
  [ "$(id -u)" = 0 ] || die "installing needs root: apt-get install ${PACKAGES[*]}"
  # One apt-get at a time, also across processes (parallel test binaries).
  exec 9>/tmp/ferrotrove-swift-install.lock
  flock 9
  local missing
  missing=$(missing_packages)
  if [ -n "$missing" ]; then
    log "installing" $missing
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  exec 9>&-
}

# --- processes

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether pid $1 is alive (a zombie, exited but not yet reaped, counts as gone).
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

any_alive() { local p; for p in "$@"; do alive "$p" && return 0; done; return 1; }

# The command line that `up` gives service $2 of instance $1 (pid files are checked
# against it, so that a stale pid file never makes us signal an unrelated process).
expected_cmdline() {
  case $2 in
    memcached) echo "memcached -l 127.0.0.1 -p" ;;
    *) echo "$1/etc/$2-server.conf" ;;
  esac
}

# Prints the pid of service $2 under BASE $1 if that process is alive and ours.
running_pid() {
  local f="$1/run/$2.pid" p
  [ -f "$f" ] || return 1
  p=$(cat "$f")
  [[ $p =~ ^[0-9]+$ ]] && alive "$p" || return 1
  tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$(expected_cmdline "$1" "$2")" || return 1
  echo "$p"
}

# Whether pid $1 holds the listening socket of 127.0.0.1:$2 (and not another instance
# that happened to get the same port).
owns_port() {
  local hex inode
  hex=$(printf '%04X' "$2")
  for inode in $(awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' /proc/net/tcp); do
    find "/proc/$1/fd" -lname "socket:\[$inode\]" 2>/dev/null | grep -q . && return 0
  done
  return 1
}

# --- up

write_rings() { # base object container account
  /usr/bin/python3 - "$@" <<'PY'
import sys
from swift.common.ring import RingBuilder
base, ports = sys.argv[1], dict(zip(("object", "container", "account"), map(int, sys.argv[2:5])))
for name, port in ports.items():
    b = RingBuilder(10, 1, 1)  # 2^10 partitions, 1 replica, min_part_hours 1
    b.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": port, "device": "d1", "weight": 1})
    b.rebalance()
    b.save(f"{base}/etc/{name}.builder")
    b.get_ring().save(f"{base}/etc/{name}.ring.gz")
PY
}

write_configs() { # base proxy object container account memcached
  local base=$1 user t port
  user=$(id -un)
  for t in object container account; do
    case $t in object) port=$3 ;; container) port=$4 ;; account) port=$5 ;; esac
    cat >"$base/etc/$t-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
# a port taken by another process: give up after 5 s, not 30
bind_timeout = 5
user = $user
swift_dir = $base/etc
devices = $base/srv
mount_check = false
log_level = WARNING

[pipeline:main]
pipeline = healthcheck $t-server

[filter:healthcheck]
use = egg:swift#healthcheck

[app:$t-server]
use = egg:swift#$t
CONF
  done
  {
    cat <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $2
workers = 0
# a port taken by another process: give up after 5 s, not 30
bind_timeout = 5
user = $user
swift_dir = $base/etc
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

# Fixed credentials for local test/dev stores only (see the top of swift.sh).
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $S3_KEY .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$6
CONF
    local f
    for f in catch_errors gatekeeper healthcheck proxy-logging:proxy_logging listing_formats bulk copy slo dlo versioned_writes; do
      printf '\n[filter:%s]\nuse = egg:swift#%s\n' "${f%%:*}" "${f##*:}"
    done
  } >"$base/etc/proxy-server.conf"
}

start_service() { # base service memcached_port
  local base=$1 s=$2
  case $s in
    memcached)
      local as_root=()
      [ "$(id -u)" != 0 ] || as_root=(-u root)
      memcached -l 127.0.0.1 -p "$3" -U 0 -m 64 "${as_root[@]}" \
        </dev/null >>"$base/log/memcached.log" 2>&1 &
      ;;
    *) # -v: log to the console (here the log file) instead of syslog
      "swift-$s-server" "$base/etc/$s-server.conf" -v \
        </dev/null >>"$base/log/$s.log" 2>&1 &
      ;;
  esac
  echo $! >"$base/run/$s.pid"
}

# Waits until service $2 (pid in its pid file) answers on port $3; fails at once if it died.
wait_healthy() { # base service port deadline_epoch_ms
  local base=$1 s=$2 port=$3 deadline=$4 p
  p=$(cat "$base/run/$s.pid")
  while :; do
    alive "$p" || die "$s (pid $p) exited while starting; see $base/log/$s.log: $(tail -n 3 "$base/log/$s.log" 2>/dev/null | tr '\n' ' ')"
    if [ "$s" = memcached ]; then
      port_open "$port" && owns_port "$p" "$port" && return 0
    else
      curl -fs -m 2 -o /dev/null "http://127.0.0.1:$port/healthcheck" && owns_port "$p" "$port" && return 0
    fi
    [ "$(date +%s%3N)" -lt "$deadline" ] ||
      die "$s not healthy on 127.0.0.1:$port (or the port belongs to another process); see $base/log/$s.log"
    sleep 0.1
  done
}

make_buckets() { # base proxy_port buckets...
  local base=$1 port=$2 token="" i b
  shift 2
  for i in $(seq 1 20); do
    token=$(curl -fsS -m 5 -D - -o /dev/null -H "X-Auth-User: $S3_USER" -H "X-Auth-Key: $S3_KEY" \
      "http://127.0.0.1:$port/auth/v1.0" 2>/dev/null |
      awk 'tolower($1) == "x-auth-token:" { print $2 }' | tr -d '\r') || true
    [ -z "$token" ] || break
    sleep 0.2
  done
  [ -n "$token" ] || die "cannot get a tempauth token from 127.0.0.1:$port; see $base/log/proxy.log"
  for b in "$@"; do
    curl -fsS -m 10 -o /dev/null -X PUT -H "X-Auth-Token: $token" \
      "http://127.0.0.1:$port/v1/AUTH_test/$b" || die "cannot create bucket $b; see $base/log/proxy.log"
  done
}

cmd_up() {
  [ $# = 6 ] || usage
  local base=$1 s any_running=""
  shift
  local proxy=$1 object=$2 container=$3 account=$4 memcached=$5 p
  for p in "$@"; do [[ $p =~ ^[0-9]+$ ]] || die "not a port: $p"; done
  mkdir -p "$base"/{etc,srv/d1,log,run}
  base=$(cd "$base" && pwd)

  for s in "${SERVICES[@]}"; do
    running_pid "$base" "$s" >/dev/null && any_running=1
  done
  # The storage ports live in the rings: an instance keeps its ports while anything runs.
  local ports="$proxy $object $container $account $memcached"
  if [ -f "$base/etc/ports" ] && [ "$(cat "$base/etc/ports")" != "$ports" ]; then
    [ -z "$any_running" ] || die "$base is up with other ports ($(cat "$base/etc/ports")); run: $0 down $base"
    rm -f "$base"/etc/*.ring.gz
  fi
  if [ ! -f "$base/etc/object.ring.gz" ] || [ ! -f "$base/etc/container.ring.gz" ] ||
    [ ! -f "$base/etc/account.ring.gz" ]; then
    write_rings "$base" "$object" "$container" "$account"
  fi
  write_configs "$base" "$proxy" "$object" "$container" "$account" "$memcached"
  echo "$ports" >"$base/etc/ports"

  local spec # service:port, in start order (the proxy last)
  for spec in "memcached:$memcached" "object:$object" "container:$container" "account:$account" "proxy:$proxy"; do
    s=${spec%%:*} p=${spec##*:}
    running_pid "$base" "$s" >/dev/null && continue
    ! port_open "$p" || die "port $p (for $s) is already taken by another process"
    start_service "$base" "$s" "$memcached"
  done
  # Wait for all of them: the proxy's /healthcheck answers before the storage servers
  # listen, and requests in between fail with 503. Several instances starting at once on
  # 2 cores take a while: 60 s in all.
  local deadline=$(($(date +%s%3N) + 60000))
  wait_healthy "$base" memcached "$memcached" "$deadline"
  wait_healthy "$base" proxy "$proxy" "$deadline"
  wait_healthy "$base" account "$account" "$deadline"
  wait_healthy "$base" container "$container" "$deadline"
  wait_healthy "$base" object "$object" "$deadline"

  # shellcheck disable=SC2086
  make_buckets "$base" "$proxy" ${SWIFT_BUCKETS:-ferrotrove-snapshots}
  log "up: S3 at http://127.0.0.1:$proxy (buckets: ${SWIFT_BUCKETS:-ferrotrove-snapshots})"
}

# --- down

cmd_down() {
  [ $# = 1 ] || usage
  local base=$1 s p pids=() i
  [ -d "$base/run" ] || return 0
  base=$(cd "$base" && pwd)
  for s in proxy account container object memcached; do
    if p=$(running_pid "$base" "$s"); then
      kill -TERM "$p" 2>/dev/null || true
      pids+=("$p")
    fi
  done
  # Wait until gone or a zombie (whoever reaps orphans here may take a few seconds).
  for i in $(seq 1 50); do any_alive "${pids[@]}" || break; sleep 0.1; done
  for p in "${pids[@]}"; do
    if alive "$p"; then
      log "pid $p did not stop on SIGTERM within 5 s; SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  for p in "${pids[@]}"; do
    for i in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
    ! alive "$p" || die "pid $p is still alive after SIGKILL"
  done
  rm -f "$base"/run/*.pid
}

case ${1:-} in
  install) shift; [ $# = 0 ] || usage; cmd_install ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  *) usage ;;
esac
