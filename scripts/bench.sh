#!/usr/bin/env bash
# Single-core time of `fathom requests` and `fathom flows` against tcpdump, ndpiReader and tshark
# on the same capture, in the same run: median of RUNS (default 10; tshark 2) interleaved rounds,
# pinned to CPU 0, file in page cache, plus peak memory (RSS, which includes the mapped capture
# for fathom).
#   scripts/bench.sh [capture.pcap]   (default: bench-data/bench.pcap, recorded if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
capture=${1:-bench-data/bench.pcap}
runs=${RUNS:-10}
fathom=.build/release/fathom

if [ ! -f "$capture" ]; then
  mkdir -p "$(dirname "$capture")"
  scripts/netns-traffic.sh bench "$capture"
fi
[ -x "$fathom" ] || swift build -c release --product fathom --static-swift-stdlib
packets=$("$fathom" flows --format jsonl "$capture" 2>&1 >/dev/null | sed -n "s/.*packets \([0-9]*\),.*/\1/p")
bytes=$(stat -c %s "$capture")
cat "$capture" > /dev/null  # page cache

timing=$(mktemp)
trap 'rm -f "$timing" "$timing".*' EXIT

tshark_fields=(-r "$capture" -Y "http or dns" -T fields -e http.request.method -e http.response.code
  -e dns.flags.response -e dns.flags.rcode)
declare -A label=(
  [requests]="fathom requests --format jsonl"
  [fathom]="fathom flows --format jsonl"
  [l4]="fathom flows --l4-only --format jsonl"
  [tcpdump]="tcpdump -r F -w /dev/null"
  [ndpi]="ndpiReader -i F (1 thread)"
  [tshark]="tshark -r F -q -z conv,tcp"
  [tsharkfields]="tshark -Y 'http or dns' -T fields"
)
tools=(requests fathom l4 tcpdump ndpi tshark tsharkfields)

# Sets `command` to a tool's command line on the capture.
command_of() {
  case $1 in
    requests) command=("$fathom" requests --format jsonl "$capture") ;;
    fathom) command=("$fathom" flows --format jsonl "$capture") ;;
    l4) command=("$fathom" flows --l4-only --format jsonl "$capture") ;;
    tcpdump) command=(tcpdump -r "$capture" -w /dev/null) ;;
    ndpi) command=(ndpiReader -q -i "$capture" -n 1) ;;
    tshark) command=(tshark -r "$capture" -q -z conv,tcp) ;;
    tsharkfields) command=(tshark "${tshark_fields[@]}") ;;
  esac
}

# The median of the numbers on standard input, one per line (the mean of the middle two for an
# even count).
median() {
  sort -n | awk '{ v[NR] = $1 } END { printf "%.15g\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# One run of a tool, pinned to CPU 0, output discarded.
run_tool() {
  command_of "$1"
  taskset -c 0 "${command[@]}" >/dev/null 2>&1 || true
}

# Wall time in rounds that run every tool once each, so that this machine's slow and fast spells
# (10-20% apart, minutes long) fall on all tools alike rather than on whichever ran then; the
# median per tool. One warm-up round first; tshark (tens of seconds a run) in two rounds only.
for tool in requests fathom l4 tcpdump ndpi; do run_tool "$tool"; done
for round in $(seq "$runs"); do
  for tool in "${tools[@]}"; do
    case $tool in tshark*) [ "$round" -le 2 ] || continue ;; esac
    start=$(date +%s%N)
    run_tool "$tool"
    end=$(date +%s%N)
    echo $(((end - start) / 1000)) >>"$timing.$tool"
  done
done
declare -A result
for tool in "${tools[@]}"; do
  median=$(median < "$timing.$tool" | awk '{ print $1 / 1e6 }')
  # Peak resident set of one more run (GNU time).
  command_of "$tool"
  /usr/bin/time -f "%M" -o "$timing" "${command[@]}" >/dev/null 2>&1 || true
  result[$tool]="$median $(tail -1 "$timing")"
done

fathom_seconds=${result[requests]% *}
printf 'capture: %s, %s packets, %s MB; median of %s interleaved rounds on one core (tshark: 2)\n' "$capture" "$packets" "$((bytes / 1000000))" "$runs"
printf '%-40s %9s %12s %12s %16s\n' tool seconds "Mpps" "peak MiB" "fathom speed-up"
for tool in "${tools[@]}"; do
  seconds=${result[$tool]% *}
  peak=${result[$tool]#* }
  awk -v l="${label[$tool]}" -v s="$seconds" -v p="$packets" -v m="$peak" -v f="$fathom_seconds" \
    'BEGIN { printf "%-40s %9.2f %12.2f %12.1f %15.2fx\n", l, s, (s > 0 ? p / s / 1e6 : 0), m / 1024, (f > 0 ? s / f : 0) }'
done

# The same requests as tshark: HTTP methods and status codes, DNS queries and rcodes.
echo
echo "request counts and status histograms, fathom vs tshark (must be equal):"
tshark "${tshark_fields[@]}" 2>/dev/null | python3 -c '
import collections, sys
counts = collections.Counter()
for line in sys.stdin:
    method, code, response, rcode = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
    if method: counts["http request " + method] += 1
    if code: counts["http status " + code] += 1
    if response in ("False", "0"): counts["dns query"] += 1
    if response in ("True", "1"): counts["dns rcode " + rcode] += 1
for key in sorted(counts): print(key, counts[key])' > "$timing.tshark"
"$fathom" requests --format jsonl "$capture" 2>/dev/null | python3 -c '
import collections, json, sys
counts = collections.Counter()
for line in sys.stdin:
    r = json.loads(line)
    if r["protocol"] == "http":
        if r["req_bytes"] > 0 or r["method"]: counts["http request " + r["method"]] += 1
        if r["code"] is not None: counts["http status %d" % r["code"]] += 1
    elif r["protocol"] == "dns":
        if r["transaction_id"] is not None and r["req_bytes"] > 0: counts["dns query"] += 1
        if r["code"] is not None and r["status"] not in ("timeout", "unknown"): counts["dns rcode %d" % r["code"]] += 1
for key in sorted(counts): print(key, counts[key])' > "$timing.fathom"
paste "$timing.fathom" "$timing.tshark" | awk -F'\t' '{ printf "  %-32s %-32s %s\n", $1, $2, ($1 == $2 ? "same" : "DIFFERENT") }'
cmp -s "$timing.fathom" "$timing.tshark" && echo "  equal" || { echo "  NOT EQUAL"; exit 1; }

# Storage: ingest rate and the RED query of one service over an hour, SQLite and ClickHouse
# (a single node started from the project's own config, scripts/clickhouse.sh). Each store runs
# STORE_RUNS times, every run's line shown, and the median rate is the figure: this VM's CPU speed
# alone varies by +-20% from minute to minute.
echo
store_runs=${STORE_RUNS:-3}
echo "storage (fathom store-bench: ${STORE_RECORDS:-1000000} synthetic requests over one hour, 20 services x 5 pods; $store_runs runs each):"
# The machine's speed in this run, for comparing store figures across runs: they move with it.
awk -v s="${result[tcpdump]% *}" -v p="$packets" \
  'BEGIN { if (s > 0) printf "  (this run'"'"'s machine speed: tcpdump read the capture at %.2f Mpps above)\n", p / s / 1e6 }'
store_bench() { # label, then store-bench's own arguments
  local label=$1 line rates=()
  shift
  for _ in $(seq "$store_runs"); do
    line=$("$fathom" store-bench --records "${STORE_RECORDS:-1000000}" "$@" 2>/dev/null) || { echo "  $label: store-bench failed" >&2; exit 1; }
    echo "  $line"
    rates+=("$(sed -E 's/.* = ([0-9]+) records\/s.*/\1/' <<< "$line")")
  done
  printf '  %s: median %s records/s\n' "$label" "$(printf '%s\n' "${rates[@]}" | median)"
}
store_bench sqlite
if command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ]; then
  # The server's data on a volume of its own with a journaled ext4, as on a ClickHouse host. This
  # VM's root ext4 has no journal, and there every file created scans past the inodes freed in the
  # last minutes: after a previous run's data was removed (make test's servers), a quarter of the
  # server's CPU went to ext4_create (perf), and rates swung from 319k to 474k records/s.
  volume=/tmp/fathom-bench-clickhouse.img
  mountpoint=/tmp/fathom-bench-clickhouse
  data=/tmp/fathom-clickhouse-bench
  if [ "$(id -u)" = 0 ] && mkdir -p "$mountpoint" && truncate -s 8G "$volume" && mkfs.ext4 -q -F "$volume" \
    && mount -o loop "$volume" "$mountpoint"; then
    data=$mountpoint/data
    echo "  (ClickHouse's data on a journaled ext4 volume: $volume, loop-mounted)"
  else
    rm -f "$volume"
    echo "  (ClickHouse's data in $data: no loop-mounted volume, which needs root and a loop device)"
  fi
  remove_volume() {
    scripts/clickhouse.sh stop "$data" >/dev/null 2>&1 || true
    if mountpoint -q "$mountpoint"; then umount "$mountpoint"; fi
    rm -f "$volume"
  }
  trap 'rm -f "$timing" "$timing".*; remove_volume' EXIT
  scripts/clickhouse.sh start "$data" >/dev/null
  # Each run's database stays until the server and its volume are removed (--keep-database).
  store_bench clickhouse --clickhouse http://127.0.0.1:18123 --keep-database
  remove_volume
fi
