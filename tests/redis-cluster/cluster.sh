# Sourced by tests/redis-cluster/run.sh and scripts/cluster-bench.sh (never
# run): a local Redis Cluster of 3 masters, each with a replica, on six free
# ports below the ephemeral range (a node also listens on its port + 10000,
# which stays below it too), with a short
# cluster-node-timeout (1 s) so that a replica takes over in seconds.
#
#   start_cluster DIR   starts it under DIR; sets PORTS (the six ports) and
#                       NODES (host:port of the three first, comma-separated)
#   cluster_ok PORT...  whether each of these nodes reports cluster_state:ok
#   stop_cluster DIR    kills every node
# Needs log and die from the caller.

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$(($1 + 10000))") 2>/dev/null; }

cluster_ok() {
  local port
  for port in "$@"; do
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

start_cluster() {
  local DIR=$1 candidate port
  PORTS=()
  # Below the kernel's ephemeral range, bus ports included: an outgoing
  # connection may hold an ephemeral port at any moment, and a bus port
  # taken that way failed a CI run ("Failed listening on port 38034").
  local ephemeral_low
  ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  local low=12000 high=$((ephemeral_low - 10000))
  candidate=$((low + RANDOM % (high - low)))
  while [ "${#PORTS[@]}" -lt 6 ]; do
    [ "$candidate" -lt "$high" ] || candidate=$low
    if port_free "$candidate"; then PORTS+=("$candidate"); fi
    candidate=$((candidate + 1))
  done
  log "starting a Redis Cluster on 127.0.0.1:${PORTS[*]} (3 masters, 3 replicas)"
  for port in "${PORTS[@]}"; do
    mkdir -p "$DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$DIR/$port/nodes.conf" --cluster-node-timeout 1000 \
      --save "" --appendonly no --dir "$DIR/$port" --daemonize yes \
      --logfile "$DIR/$port/log" --pidfile "$DIR/$port/pid"
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 50); do [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
    # A port taken between the check and the start: say so now, not at create.
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] ||
      { tail -5 "$DIR/$port/log" >&2; die "the cluster node on port $port did not start"; }
  done
  local addresses=()
  for port in "${PORTS[@]}"; do addresses+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
    { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
  for _ in $(seq 1 100); do cluster_ok "${PORTS[@]}" && break; sleep 0.1; done
  cluster_ok "${PORTS[@]}" || die "the cluster did not reach cluster_state:ok"
  NODES=$(IFS=,; echo "${addresses[*]:0:3}")
}

stop_cluster() {
  local DIR=$1 port
  for port in "${PORTS[@]}"; do
    [ -s "$DIR/$port/pid" ] && kill -KILL "$(cat "$DIR/$port/pid")" 2>/dev/null
  done
  return 0
}
