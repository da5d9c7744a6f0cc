#!/usr/bin/env bash
# Single-core time of `fathom flows` against tcpdump, ndpiReader and tshark on the same capture,
# in the same run: median of RUNS (default 10; tshark 2) runs each, pinned to CPU 0, file in page
# cache, plus peak memory (RSS, which includes the mapped capture for fathom).
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
[ -x "$fathom" ] || swift build -c release --product fathom
packets=$("$fathom" flows --format jsonl "$capture" 2>&1 >/dev/null | sed -n "s/.*packets \([0-9]*\),.*/\1/p")
bytes=$(stat -c %s "$capture")
cat "$capture" > /dev/null  # page cache

timing=$(mktemp)
trap 'rm -f "$timing" "$timing.json"' EXIT

# Prints "median_seconds peak_kib" for a command: hyperfine for time (pinned to CPU 0), GNU time
# for the peak resident set of one more run.
measure() {
  local runs=$1
  shift
  hyperfine -N --style none --warmup 1 --runs "$runs" --export-json "$timing.json" "taskset -c 0 $*" >/dev/null 2>&1
  local median
  median=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$timing.json")
  /usr/bin/time -f "%M" -o "$timing" "$@" >/dev/null 2>&1 || true
  echo "$median $(tail -1 "$timing")"
}

declare -A label=(
  [fathom]="fathom flows --format jsonl"
  [tcpdump]="tcpdump -r F -w /dev/null"
  [ndpi]="ndpiReader -i F (1 thread)"
  [tshark]="tshark -r F -q -z conv,tcp"
)
declare -A result
result[fathom]=$(measure "$runs" "$fathom" flows --format jsonl "$capture")
result[tcpdump]=$(measure "$runs" tcpdump -r "$capture" -w /dev/null)
result[ndpi]=$(measure "$runs" ndpiReader -q -i "$capture" -n 1)
result[tshark]=$(measure 2 tshark -r "$capture" -q -z conv,tcp)

fathom_seconds=${result[fathom]% *}
printf 'capture: %s, %s packets, %s MB; median of %s runs on one core (tshark: 2)\n' "$capture" "$packets" "$((bytes / 1000000))" "$runs"
printf '%-32s %9s %12s %12s %16s\n' tool seconds "Mpps" "peak MiB" "fathom speed-up"
for tool in fathom tcpdump ndpi tshark; do
  seconds=${result[$tool]% *}
  peak=${result[$tool]#* }
  awk -v l="${label[$tool]}" -v s="$seconds" -v p="$packets" -v m="$peak" -v f="$fathom_seconds" \
    'BEGIN { printf "%-32s %9.2f %12.2f %12.1f %15.2fx\n", l, s, (s > 0 ? p / s / 1e6 : 0), m / 1024, (f > 0 ? s / f : 0) }'
done
