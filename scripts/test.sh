#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL and Redis on this machine. Starts them when
# they are down, and on a fresh Debian machine installs them first (apt, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${TONGJIAO_TEST_PG:=postgres://postgres@127.0.0.1:5432/postgres}"
: "${TONGJIAO_TEST_REDIS:=redis://127.0.0.1:6379}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {
  for _ in $(seq 1 60); do listening "$1" && return 0; sleep 0.5; done
  echo "nothing listens on 127.0.0.1:$1 ($2 did not start)" >&2
  return 1
}
apt_install() {
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! listening 5432; then
  if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing PostgreSQL (安装 PostgreSQL)…" >&2
    apt_install postgresql
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  wait_for 5432 PostgreSQL
fi
if ! listening 6379; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing Redis (安装 Redis)…" >&2
    apt_install redis-server
  fi
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 Redis
fi

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
# The tests log in as postgres over TCP. A fresh Debian cluster asks for a password there (this
# machine's trusts local connections), so give postgres one when needed.
if ! psql "$TONGJIAO_TEST_PG" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  as_postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
  TONGJIAO_TEST_PG="postgres://postgres:postgres@127.0.0.1:5432/postgres"
fi
export TONGJIAO_TEST_PG TONGJIAO_TEST_REDIS

# Each test creates its own database (tj_…); drop those of earlier runs.
psql "$TONGJIAO_TEST_PG" -qAtc "SELECT datname FROM pg_database WHERE datname LIKE 'tj\_%'" |
  while read -r db; do psql "$TONGJIAO_TEST_PG" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null; done
redis-cli -u "$TONGJIAO_TEST_REDIS" --scan --pattern 'tjtest:*' 2>/dev/null |
  xargs -r -n 500 redis-cli -u "$TONGJIAO_TEST_REDIS" DEL >/dev/null 2>&1 || true

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
