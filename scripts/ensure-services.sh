#!/usr/bin/env bash
# Make sure RabbitMQ (127.0.0.1:5672) and PostgreSQL (127.0.0.1:5432) answer; start them if not.
# Local installs first (the development machines have both); Docker compose when a Docker engine
# runs and nothing local exists; otherwise say exactly what to install.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # port, name, seconds
  for _ in $(seq 1 "$3"); do port_open "$1" && return 0; sleep 1; done
  echo "ensure-services: $2 did not come up on 127.0.0.1:$1 within $3 s" >&2
  return 1
}

docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

start_postgres() {
  if port_open 5432; then return 0; fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "ensure-services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  elif docker_ok; then
    echo "ensure-services: starting PostgreSQL from compose.yaml"
    docker compose up -d postgres
  else
    echo "ensure-services: PostgreSQL is not running and not installed." >&2
    echo "  Debian/Ubuntu: apt-get install postgresql  (trust auth for 127.0.0.1, or set ORDERFLOW_*_DSN)" >&2
    echo "  or install Docker and run: docker compose up -d postgres" >&2
    exit 1
  fi
  wait_port 5432 PostgreSQL 60
  # the port opens a moment before the server accepts queries
  for _ in $(seq 1 30); do
    psql -h 127.0.0.1 -U postgres -Atc 'select 1' >/dev/null 2>&1 && return 0; sleep 1
  done
}

start_rabbitmq() {
  if port_open 5672; then return 0; fi
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "ensure-services: starting RabbitMQ"
    rabbitmq-server -detached
    wait_port 5672 RabbitMQ 90
    rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  elif docker_ok; then
    echo "ensure-services: starting RabbitMQ from compose.yaml"
    docker compose up -d rabbitmq
    wait_port 5672 RabbitMQ 90
  else
    echo "ensure-services: RabbitMQ is not running and not installed." >&2
    echo "  Debian/Ubuntu: apt-get install rabbitmq-server" >&2
    echo "  or install Docker and run: docker compose up -d rabbitmq" >&2
    exit 1
  fi
}

start_postgres
start_rabbitmq
echo "ensure-services: RabbitMQ and PostgreSQL are up"
