#!/usr/bin/env bash
# Start (or reuse) a 6-node Redis Cluster on 127.0.0.1:7000-7005: 3 masters, 3 replicas.
#
#   tests/support/redis_cluster.sh [start|stop|status|restart-node PORT]
#
# Idempotent: a healthy cluster already running on those ports (cluster_state:ok, 6 known
# nodes, 16384 slots assigned) is reused as it is. Otherwise the nodes this script started
# before are stopped, their data is wiped, six fresh `redis-server --cluster-enabled yes` are
# started and joined with `redis-cli --cluster create --cluster-replicas 1`.
# cluster-node-timeout is 1000 ms so a failover in the tests takes ~2 s, not ~20.
# Env: REDIS_CLUSTER_DIR (default /tmp/concert-redis-cluster), REDIS_CLUSTER_PORTS
# (default "7000 7001 7002 7003 7004 7005"), REDIS_CLUSTER_HOST (default 127.0.0.1),
# REDIS_CLUSTER_BUS_OFFSET (default 10000: each node's cluster bus on its port + 10000; a port
# above 22767 puts its bus in Linux's ephemeral range 32768-60999, where an outgoing connection
# may hold it and the node fails to start: give such ports a smaller offset, e.g. 10).
set -euo pipefail

DIR=${REDIS_CLUSTER_DIR:-/tmp/concert-redis-cluster}
HOST=${REDIS_CLUSTER_HOST:-127.0.0.1}
BUS_OFFSET=${REDIS_CLUSTER_BUS_OFFSET:-10000}
read -r -a PORTS <<<"${REDIS_CLUSTER_PORTS:-7000 7001 7002 7003 7004 7005}"

log() { printf '[redis-cluster] %s\n' "$*"; }

healthy() {
  local info nodes
  info=$(redis-cli -h "$HOST" -p "${PORTS[0]}" cluster info 2>/dev/null) || return 1
  grep -q '^cluster_state:ok' <<<"$info" || return 1
  grep -q '^cluster_slots_assigned:16384' <<<"$info" || return 1
  grep -q "^cluster_known_nodes:${#PORTS[@]}" <<<"$info" || return 1
  for port in "${PORTS[@]}"; do
    redis-cli -h "$HOST" -p "$port" ping >/dev/null 2>&1 || return 1
  done
}

stop_nodes() {
  for port in "${PORTS[@]}"; do
    local pidfile="$DIR/$port/redis.pid"
    if [ -f "$pidfile" ]; then
      local pid
      pid=$(cat "$pidfile")
      if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    fi
    # a node started by someone else on our port (no pid file of ours): ask it to go
    redis-cli -h "$HOST" -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 50); do
    local up=0
    for port in "${PORTS[@]}"; do redis-cli -h "$HOST" -p "$port" ping >/dev/null 2>&1 && up=1; done
    [ "$up" = 0 ] && return 0
    sleep 0.1
  done
}

node() {  # start one node on its own dir (its nodes.conf, if any, makes it rejoin the cluster)
  local port=$1
  mkdir -p "$DIR/$port"
  redis-server --port "$port" --cluster-port $((port + BUS_OFFSET)) --bind "$HOST" \
    --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 1000 --cluster-replica-validity-factor 0 --appendonly no --save "" \
    --dir "$DIR/$port" --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log" \
    --daemonize yes --maxmemory-policy noeviction --enable-debug-command local
}

start_nodes() {
  for port in "${PORTS[@]}"; do
    rm -rf "${DIR:?}/$port"
    node "$port"
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 50); do
      redis-cli -h "$HOST" -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  local nodes=()
  for port in "${PORTS[@]}"; do nodes+=("$HOST:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 || {
    cat "$DIR/create.log" >&2
    return 1
  }
  for _ in $(seq 1 100); do
    if healthy; then return 0; fi
    sleep 0.1
  done
  log "the cluster did not become healthy" >&2
  redis-cli -h "$HOST" -p "${PORTS[0]}" cluster info >&2 || true
  return 1
}

case "${1:-start}" in
  start)
    if healthy; then
      log "reusing the healthy cluster on $HOST:${PORTS[0]}-${PORTS[-1]}"
      exit 0
    fi
    command -v redis-server >/dev/null || { log "redis-server is not installed" >&2; exit 1; }
    mkdir -p "$DIR"
    stop_nodes
    start_nodes
    log "started ${#PORTS[@]} nodes on $HOST:${PORTS[0]}-${PORTS[-1]} (data in $DIR)"
    ;;
  stop) stop_nodes; log "stopped" ;;
  restart-node)  # bring one killed node back (the failover test): it rejoins, as a replica
    node "${2:?port}"
    for _ in $(seq 1 50); do redis-cli -h "$HOST" -p "$2" ping >/dev/null 2>&1 && break; sleep 0.1; done
    log "restarted node $2"
    ;;
  status) if healthy; then log "healthy"; else log "not healthy"; exit 1; fi ;;
  *) echo "usage: $0 [start|stop|status|restart-node PORT]" >&2; exit 2 ;;
esac
