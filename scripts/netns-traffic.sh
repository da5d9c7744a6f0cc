#!/usr/bin/env bash
# Records real traffic between two network namespaces this script creates and removes:
# nginx (200 / 404 / 503), dnsmasq answering cluster names (with Kubernetes search-path
# NXDOMAINs), a port REJECTed by iptables with icmp-port-unreachable (as kube-proxy does for a
# Service without endpoints) and a closed port (RST). Nothing leaves the two namespaces.
#
#   scripts/netns-traffic.sh demo  OUT.pcap   # a few hundred packets, for `make demo`
#   scripts/netns-traffic.sh bench OUT.pcap   # >= 500k packets, for `make bench`
#
# Needs root, iproute2, iptables, nginx, dnsmasq, tcpdump, curl, python3 (and wrk for bench).
set -euo pipefail

profile=${1:?profile: demo or bench}
out=${2:?output pcap}
client=fathom-traffic-client
server=fathom-traffic-server
client_ip=10.77.0.1
server_ip=10.77.0.2
work=$(mktemp -d /tmp/fathom-traffic.XXXXXX)

cleanup() {
  set +e
  for pidfile in "$work"/*.pid; do [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; done
  ip netns pids "$server" 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns pids "$client" 2>/dev/null | xargs -r kill 2>/dev/null
  sleep 0.2
  ip netns del "$client" 2>/dev/null
  ip netns del "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "netns-traffic.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in ip iptables nginx dnsmasq tcpdump curl python3; do
  command -v "$tool" >/dev/null || { echo "netns-traffic.sh: missing $tool" >&2; exit 1; }
done

ip netns del "$client" 2>/dev/null || true
ip netns del "$server" 2>/dev/null || true
ip netns add "$client"
ip netns add "$server"
ip link add veth-fathom-c type veth peer name veth-fathom-s
ip link set veth-fathom-c netns "$client"
ip link set veth-fathom-s netns "$server"
ip -n "$client" addr add "$client_ip/24" dev veth-fathom-c
ip -n "$server" addr add "$server_ip/24" dev veth-fathom-s
for ns in "$client" "$server"; do
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1  # no router solicitations in the capture
done
ip -n "$client" link set veth-fathom-c up
ip -n "$server" link set veth-fathom-s up
# Segmentation offloads off, so the capture holds wire-sized segments.
ip netns exec "$client" ethtool -K veth-fathom-c tso off gso off gro off >/dev/null 2>&1 || true
ip netns exec "$server" ethtool -K veth-fathom-s tso off gso off gro off >/dev/null 2>&1 || true

mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  keepalive_requests 1000000;
  server {
    listen $server_ip:80 reuseport backlog=4096;
    location = /       { return 200 "ok\n"; }
    location = /cart   { return 200 "{\"items\":[1,2,3],\"total\":42}\n"; }
    location = /error  { return 503 "unavailable\n"; }
    location /         { return 404 "not found\n"; }
  }
}
CONF
ip netns exec "$server" nginx -c "$work/nginx.conf"
ip netns exec "$server" dnsmasq --pid-file="$work/dnsmasq.pid" --listen-address="$server_ip" --bind-interfaces \
  --no-resolv --no-hosts --local=/cluster.local/ \
  --address=/web.shop.svc.cluster.local/"$server_ip" --address=/checkout.shop.svc.cluster.local/10.96.0.20
ip netns exec "$server" iptables -A INPUT -p tcp --dport 81 -j REJECT --reject-with icmp-port-unreachable

ip netns exec "$client" tcpdump -i veth-fathom-c -s 0 -B 262144 -U -w "$out" 2>"$work/tcpdump.log" &
echo $! > "$work/tcpdump.pid"
sleep 1

dns_load() {  # $1 = queries; each lookup walks the pod search path like a resolver with ndots:5
  ip netns exec "$client" python3 - "$server_ip" "$1" <<'PY'
import socket, struct, sys, random
server, count = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(0.5)
suffixes = ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", ""]
def query(name):
    qid = random.randrange(65536)
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.strip(".").split("."):
        packet += bytes([len(label)]) + label.encode()
    packet += b"\x00" + struct.pack("!HH", 1, 1)
    sock.sendto(packet, (server, 53))
    try:
        sock.recv(512)
    except socket.timeout:
        pass
sent = 0
while sent < count:
    for short in ("web", "checkout"):
        for suffix in suffixes:
            query(short + "." + suffix if suffix else short + ".shop.svc.cluster.local")
            sent += 1
PY
}

if [ "$profile" = demo ]; then
  for i in $(seq 1 5); do  # keep-alive: two requests on one connection
    ip netns exec "$client" curl -s -o /dev/null -o /dev/null "http://$server_ip/cart" "http://$server_ip/"
  done
  for path in missing error cart; do ip netns exec "$client" curl -s -o /dev/null "http://$server_ip/$path"; done
  ip netns exec "$client" curl -s -o /dev/null --max-time 2 "http://$server_ip:81/" || true   # REJECTed
  ip netns exec "$client" curl -s -o /dev/null --max-time 2 "http://$server_ip:82/" || true   # RST
  dns_load 16
else
  command -v wrk >/dev/null || { echo "netns-traffic.sh: missing wrk" >&2; exit 1; }
  cat > "$work/short.lua" <<'LUA'
local paths = {"/", "/cart", "/missing", "/error"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], {["Connection"] = "close"})
end
LUA
  ip netns exec "$client" wrk -t1 -c8 -d6s "http://$server_ip/cart" >/dev/null &
  load_pids=($!)
  ip netns exec "$client" wrk -t1 -c4 -d6s -s "$work/short.lua" "http://$server_ip/" >/dev/null &
  load_pids+=($!)
  dns_load 30000 &
  load_pids+=($!)
  for i in $(seq 1 20); do
    ip netns exec "$client" curl -s -o /dev/null --max-time 1 "http://$server_ip:81/" || true
  done
  wait "${load_pids[@]}"  # not the capture, which runs in the background too
fi

sleep 0.5
kill -INT "$(cat "$work/tcpdump.pid")"
wait "$(cat "$work/tcpdump.pid")" 2>/dev/null || true
rm -f "$work/tcpdump.pid"
echo "$out: $(tcpdump -r "$out" 2>/dev/null | wc -l) packets" >&2
