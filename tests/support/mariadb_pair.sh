#!/usr/bin/env bash
# Start (or reuse) a MariaDB primary + replica pair on 127.0.0.1 for the replica tests (SPEC §2, §8).
#
#   tests/support/mariadb_pair.sh [start|stop|status|start-replica]
#
# Two `mariadbd` processes of their own (never the system instance on 3306), each with its own
# datadir, socket, pid file and port: the primary writes a binlog (server-id 1), the replica
# (server-id 2, read_only) follows it with `CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos`.
# Both accept root without a password from 127.0.0.1; MARIADB_PAIR_DATABASE (default `test`) is
# created on the primary and reaches the replica by replication.
#
# Idempotent and fast: a pair that answers and replicates is reused as it is; a server that is
# down is started again on its datadir (the replica resumes from its GTID position); only a
# missing datadir is initialised (mariadb-install-db once, copied for the second server).
# `start-replica` brings back a replica a test shut down. Ends with both servers up and the
# replica's IO and SQL threads running (a test that stopped them is undone by `start`).
# Env: MARIADB_PAIR_DIR (default /tmp/concert-mariadb-pair), MARIADB_PAIR_PORTS (default
# "3307 3308": primary, replica), MARIADB_PAIR_DATABASE (default test).
set -euo pipefail

DIR=${MARIADB_PAIR_DIR:-/tmp/concert-mariadb-pair}
read -r PRIMARY_PORT REPLICA_PORT <<<"${MARIADB_PAIR_PORTS:-3307 3308}"
DATABASE=${MARIADB_PAIR_DATABASE:-test}
HOST=127.0.0.1
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

log() { printf '[mariadb-pair] %s\n' "$*"; }

sql() {  # sql PORT STATEMENT...: run as root over TCP, tab-separated output, no headers
  local port=$1
  shift
  mariadb --no-defaults -h "$HOST" -P "$port" -uroot -N -B --connect-timeout=2 -e "$*"
}

sock_sql() {  # sock_sql NAME STATEMENT...: as root over the server's socket (before TCP root exists)
  local name=$1
  shift
  mariadb --no-defaults -S "$DIR/$name/mysqld.sock" -uroot -N -B -e "$*"
}

slave_status() { mariadb --no-defaults -h "$HOST" -P "$REPLICA_PORT" -uroot -B --connect-timeout=2 -e 'SHOW SLAVE STATUS\G'; }

up() { mariadb-admin --no-defaults -h "$HOST" -P "$1" -uroot --connect-timeout=1 ping >/dev/null 2>&1; }

replicating() {
  local status
  status=$(slave_status 2>/dev/null) || return 1
  grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"
}

healthy() { up "$PRIMARY_PORT" && up "$REPLICA_PORT" && replicating; }

init_datadir() {  # one mariadb-install-db (~2 s), copied for the second server
  local name=$1
  [ -d "$DIR/$name/data/mysql" ] && return 0
  rm -rf "${DIR:?}/$name"
  mkdir -p "$DIR/$name"
  if [ -d "$DIR/template/mysql" ]; then
    cp -a "$DIR/template" "$DIR/$name/data"
    return 0
  fi
  mariadb-install-db --no-defaults --user=root --datadir="$DIR/template" --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve >"$DIR/install.log" 2>&1 || {
    cat "$DIR/install.log" >&2
    return 1
  }
  cp -a "$DIR/template" "$DIR/$name/data"
}

server() {  # server NAME PORT SERVER_ID [options...]: start mariadbd in the background, wait for it
  local name=$1 port=$2 id=$3
  shift 3
  local new=0
  [ -d "$DIR/$name/data/mysql" ] || new=1
  init_datadir "$name"
  # Small and fast: a test server, not a durable one (durability is the primary's system instance's job).
  setsid "$MARIADBD" --no-defaults --user=root --datadir="$DIR/$name/data" --port="$port" --bind-address="$HOST" \
    --socket="$DIR/$name/mysqld.sock" --pid-file="$DIR/$name/mysqld.pid" --log-error="$DIR/$name/error.log" \
    --server-id="$id" --skip-name-resolve --performance-schema=OFF --innodb-buffer-pool-size=64M \
    --innodb-log-file-size=32M --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --max-connections=300 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci "$@" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 100); do
    [ -S "$DIR/$name/mysqld.sock" ] && sock_sql "$name" "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  sock_sql "$name" "SELECT 1" >/dev/null 2>&1 || {
    log "$name did not start on port $port:" >&2
    tail -20 "$DIR/$name/error.log" >&2
    return 1
  }
  if [ "$new" = 1 ]; then  # root over TCP and the replication user, kept out of the binlog
    sock_sql "$name" "SET SESSION sql_log_bin=0;
      CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
      GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
      CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY 'repl';
      GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';"
  fi
}

start_primary() {
  up "$PRIMARY_PORT" && return 0
  server primary "$PRIMARY_PORT" 1 --log-bin=mysql-bin --binlog-format=ROW
  sql "$PRIMARY_PORT" "CREATE DATABASE IF NOT EXISTS \`$DATABASE\` CHARACTER SET utf8mb4"
}

start_replica() {
  if ! up "$REPLICA_PORT"; then
    server replica "$REPLICA_PORT" 2 --read-only=ON --relay-log=relay-bin
  fi
  local configured
  configured=$(slave_status | grep -c "Master_Port: $PRIMARY_PORT" || true)
  if [ "$configured" = 0 ]; then
    sql "$REPLICA_PORT" "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='$HOST', MASTER_PORT=$PRIMARY_PORT,
      MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos"
  fi
  sql "$REPLICA_PORT" "START SLAVE" >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do
    replicating && return 0
    sleep 0.1
  done
  log "the replica does not replicate:" >&2
  slave_status | grep -E 'Running|Error' >&2 || true
  return 1
}

caught_up() {  # the replica has applied everything the primary has written (MASTER_GTID_WAIT)
  local pos
  pos=$(sql "$PRIMARY_PORT" "SELECT @@gtid_binlog_pos")
  [ "$(sql "$REPLICA_PORT" "SELECT MASTER_GTID_WAIT('$pos', 10)")" = 0 ]
}

stop_server() {
  local name=$1 port=$2 pid
  if [ -f "$DIR/$name/mysqld.pid" ]; then
    pid=$(cat "$DIR/$name/mysqld.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  ! up "$port"
}

case "${1:-start}" in
  start)
    if healthy; then
      log "reusing the pair on $HOST:$PRIMARY_PORT (primary) and $HOST:$REPLICA_PORT (replica)"
      exit 0
    fi
    [ -x "$MARIADBD" ] || { log "mariadbd is not installed (apt-get install mariadb-server)" >&2; exit 1; }
    mkdir -p "$DIR"
    start_primary
    start_replica
    caught_up
    log "primary on $HOST:$PRIMARY_PORT, replica on $HOST:$REPLICA_PORT, database $DATABASE (data in $DIR)"
    ;;
  start-replica) start_replica; caught_up; log "replica on $HOST:$REPLICA_PORT replicating" ;;
  stop)
    stop_server replica "$REPLICA_PORT" && stop_server primary "$PRIMARY_PORT"
    log "stopped"
    ;;
  status) if healthy; then log "healthy"; else log "not healthy"; exit 1; fi ;;
  *) echo "usage: $0 [start|stop|status|start-replica]" >&2; exit 2 ;;
esac
