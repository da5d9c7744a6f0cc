#!/usr/bin/env bash
# Starts and stops the ClickHouse servers the tests use, from the project's own configuration, on
# loopback only: one single node (HTTP 18123) and two more instances forming the two-shard cluster
# `fathom_cluster` (HTTP 18124 and 18125) for Distributed tables. Data lives under $DIR.
#
#   scripts/clickhouse.sh start [DIR]    # waits until all three answer
#   scripts/clickhouse.sh stop  [DIR]
set -euo pipefail

action=${1:?start or stop}
dir=${2:-/tmp/fathom-clickhouse}
server=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)

config() { # name http_port tcp_port interserver_port
  local name=$1 http=$2 tcp=$3 inter=$4 root="$dir/$1"
  mkdir -p "$root/data/" "$root/tmp/" "$root/log"
  cat > "$root/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$root/log/server.log</log><errorlog>$root/log/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <interserver_http_port>$inter</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>$root/data/</path>
  <tmp_path>$root/tmp/</tmp_path>
  <user_files_path>$root/user_files/</user_files_path>
  <format_schema_path>$root/format_schemas/</format_schema_path>
  <users_config>$root/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <remote_servers>
    <fathom_cluster>
      <shard><replica><host>127.0.0.1</host><port>19124</port></replica></shard>
      <shard><replica><host>127.0.0.1</host><port>19125</port></replica></shard>
    </fathom_cluster>
  </remote_servers>
</yandex>
XML
  cat > "$root/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>2000000000</max_memory_usage></default>
    <!-- The tests' password user: its own memory limit tells which user a query ran as. -->
    <fathom><max_memory_usage>1999999999</max_memory_usage></fathom>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
    <fathom>
      <password>s3cret</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>fathom</profile>
      <quota>default</quota>
    </fathom>
  </users>
  <quotas><default></default></quotas>
</yandex>
XML
}

case $action in
  start)
    [ -x "$server" ] || { echo "clickhouse.sh: clickhouse-server is not installed (apt-get install clickhouse-server)" >&2; exit 1; }
    "$0" stop "$dir" >/dev/null 2>&1 || true
    config single 18123 19123 19223
    config shard1 18124 19124 19224
    config shard2 18125 19125 19225
    for name in single shard1 shard2; do
      "$server" --config-file="$dir/$name/config.xml" --pid-file="$dir/$name/server.pid" --daemon
    done
    for port in 18123 18124 18125; do
      for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/?query=SELECT%201" >/dev/null 2>&1 && break
        sleep 0.1
      done
      curl -sf "http://127.0.0.1:$port/?query=SELECT%201" >/dev/null || { echo "clickhouse.sh: port $port does not answer; see $dir/*/log" >&2; exit 1; }
    done
    echo "clickhouse: single node http://127.0.0.1:18123, cluster fathom_cluster via http://127.0.0.1:18124 (shards 18124, 18125)"
    ;;
  stop)
    # A server removes its pid file as it exits: read it once per check, quietly.
    pid_of() { cat "$dir/$1/server.pid" 2>/dev/null || true; }
    for name in single shard1 shard2; do
      pid=$(pid_of "$name")
      if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    for name in single shard1 shard2; do
      for _ in $(seq 1 50); do
        pid=$(pid_of "$name")
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      pid=$(pid_of "$name")
      if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
