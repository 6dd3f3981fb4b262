#!/usr/bin/env bash
# A local RabbitMQ cluster on this machine: nodes of1..of3@localhost from the installed server,
# AMQP on 5681..5683, never touching the default node (5672). Run as root (the nodes run as the
# rabbitmq user and share its Erlang cookie, which is read, never changed).
#
#   scripts/cluster.sh start          # start the nodes that are down, cluster them; prints the URL
#   scripts/cluster.sh stop           # stop every node (data kept)
#   scripts/cluster.sh status         # which nodes run, and the cluster as of1 sees it
#   scripts/cluster.sh kill N         # SIGKILL node ofN (chaos); `start` brings it back
#   scripts/cluster.sh start-node N   # start one node and wait for it
#   scripts/cluster.sh url            # the ORDERFLOW_AMQP_URL of the cluster (guest, vhost /)
#   scripts/cluster.sh reset          # stop and delete the nodes' data
#
# Where: ORDERFLOW_CLUSTER_DIR (default /var/tmp/orderflow-cluster); how many: ORDERFLOW_CLUSTER_NODES.
set -euo pipefail

BASE=${ORDERFLOW_CLUSTER_DIR:-/var/tmp/orderflow-cluster}
COUNT=${ORDERFLOW_CLUSTER_NODES:-3}
SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
CTL=/usr/lib/rabbitmq/bin/rabbitmqctl

node() { echo "of$1@localhost"; }
port() { echo $((5680 + $1)); }
dir() { echo "$BASE/of$1"; }

as_rabbitmq() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u rabbitmq -- "$@"; else "$@"; fi
}

ctl() {  # rabbitmqctl against one node, from the rabbitmq user's home (its cookie)
  local n=$1; shift
  (cd /var/lib/rabbitmq && as_rabbitmq env HOME=/var/lib/rabbitmq "$CTL" -n "$(node "$n")" "$@")
}

running() {
  local pidfile; pidfile="$(dir "$1")/pid"
  [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

prepare() {
  local n=$1 d; d="$(dir "$n")"
  mkdir -p "$d/mnesia" "$d/log"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(port "$n")
loopback_users.guest = true
cluster_partition_handling = pause_minority
EOF
  : >"$d/rabbitmq-env.conf"
  echo "[]." >"$d/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$d"
}

start_node() {
  local n=$1 d; d="$(dir "$n")"
  if running "$n"; then return 0; fi
  prepare "$n"
  rm -f "$d/pid"  # stale after a SIGKILL
  # the whole subshell detached from our output: whoever runs this script must not wait on it
  (cd /var/lib/rabbitmq && as_rabbitmq env -i HOME=/var/lib/rabbitmq PATH="$PATH" \
    RABBITMQ_NODENAME="$(node "$n")" \
    RABBITMQ_NODE_PORT="$(port "$n")" \
    RABBITMQ_DIST_PORT=$((25680 + n)) \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq" \
    RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_PID_FILE="$d/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +S 1:1" \
    setsid "$SERVER") >"$d/log/stdout.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do [ -s "$d/pid" ] && break; sleep 0.1; done
  ctl "$n" wait "$d/pid" --timeout 60 >/dev/null
}

joined() {  # is node n in of1's cluster?
  ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "\"$(node "$1")\""
}

start() {
  local pids=()
  for n in $(seq 1 "$COUNT"); do start_node "$n" & pids+=($!); done  # side by side: 4 s, not 12
  for pid in "${pids[@]}"; do wait "$pid"; done
  for n in $(seq 2 "$COUNT"); do
    if ! joined "$n"; then
      ctl "$n" stop_app >/dev/null
      ctl "$n" join_cluster "$(node 1)" >/dev/null
      ctl "$n" start_app >/dev/null
    fi
  done
  url
}

url() {
  local hosts=()
  for n in $(seq 1 "$COUNT"); do hosts+=("amqp://guest:guest@127.0.0.1:$(port "$n")/"); done
  (IFS=,; echo "${hosts[*]}")
}

stop() {
  for n in $(seq "$COUNT" -1 1); do
    if running "$n"; then
      ctl "$n" stop "$(dir "$n")/pid" --timeout 60 >/dev/null 2>&1 || kill_node "$n"
    fi
  done
}

kill_node() {
  local pidfile; pidfile="$(dir "$1")/pid"
  if running "$1"; then
    local pid; pid=$(cat "$pidfile")
    kill -KILL "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -f "$pidfile"
}

status() {
  for n in $(seq 1 "$COUNT"); do
    if running "$n"; then echo "$(node "$n") running on $(port "$n"), pid $(cat "$(dir "$n")/pid")"
    else echo "$(node "$n") down"; fi
  done
  if running 1; then echo "cluster members running:"; ctl 1 cluster_status 2>/dev/null | sed -n '/Running Nodes/,/Versions/p' | grep '@' | sed 's/^/  /'; fi
}

case "${1:-status}" in
  start) start ;;
  start-node) start_node "${2:?node number}" ;;
  stop) stop ;;
  kill) kill_node "${2:?node number}" ;;
  status) status ;;
  url) url ;;
  reset) stop; rm -rf "$BASE" ;;
  *) echo "usage: $0 start|stop|status|kill N|start-node N|url|reset" >&2; exit 2 ;;
esac
