#!/usr/bin/env bash
# Makes sure RabbitMQ and MariaDB are installed and running on this machine, and that the
# control plane's development database user exists. Idempotent; safe to run any time.
#   Installs with apt-get when missing (Debian/Ubuntu, as root).
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "this step needs root: $*"; exit 1
  fi
}

apt_install() {
  need_root "apt-get install $*"
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port what seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do port_open "$1" && return 0; sleep 0.1; done
  log "$2 did not start listening on port $1 within $3 s"; return 1
}

# --- MariaDB (the control DB; the agents run their own servers from the same packages)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server mariadb-client
command -v mariadb-dump >/dev/null || apt_install mariadb-client
# Physical snapshots (replica seeding at disk speed); agents fall back to logical without it.
command -v mariabackup >/dev/null || apt_install mariadb-backup
if ! port_open 3306; then
  log "starting MariaDB"
  if [ -x /etc/init.d/mariadb ]; then
    /etc/init.d/mariadb start >/dev/null
  else
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  fi
  wait_port 3306 MariaDB 60
fi

# --- RabbitMQ
command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
if ! port_open 5672; then
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  wait_port 5672 RabbitMQ 120
fi

# --- the control plane's database user (development credentials; see README)
# Over the local socket as the system's root, which a fresh Debian install allows.
if ! mariadb -h 127.0.0.1 -u ferrotrove -pferrotrove -e 'SELECT 1' >/dev/null 2>&1; then
  need_root "creating the ferrotrove database user"
  log "creating database user ferrotrove"
  mariadb -u root <<'SQL'
CREATE USER IF NOT EXISTS 'ferrotrove'@'127.0.0.1' IDENTIFIED BY 'ferrotrove';
CREATE USER IF NOT EXISTS 'ferrotrove'@'localhost' IDENTIFIED BY 'ferrotrove';
GRANT ALL PRIVILEGES ON *.* TO 'ferrotrove'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'ferrotrove'@'localhost';
SQL
fi
log "RabbitMQ on 127.0.0.1:5672 and MariaDB on 127.0.0.1:3306 are up"
