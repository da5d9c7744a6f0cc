# Fathom: the two commands a user runs first (see README), plus bench and fuzz.
SHELL := /bin/bash
SWIFT ?= swift

# Debian packages the build and the tests need; installed when missing.
BUILD_PACKAGES := libpcap-dev zlib1g-dev libcurl4-openssl-dev
LAB_PACKAGES := iproute2 iptables ethtool nginx-light dnsmasq redis-server curl procps
TEST_PACKAGES := $(BUILD_PACKAGES) $(LAB_PACKAGES) tcpdump clickhouse-server sqlite3 openssl socat
BENCH_PACKAGES := $(TEST_PACKAGES) tshark libndpi-bin wrk time hyperfine

.PHONY: demo test build bench fuzz scenarios deps-build deps-test deps-lab deps-bench clean

define install_missing
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $$missing >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; }; \
	fi
endef

deps-build:
	$(call install_missing,$(BUILD_PACKAGES))

deps-test:
	$(call install_missing,$(TEST_PACKAGES))

deps-bench:
	$(call install_missing,$(BENCH_PACKAGES))

# The Swift runtime and Foundation linked in: a process starts in 20 ms instead of 30 ms (the
# dynamic loader resolved their symbols at every start), which is 2% of the bench capture's run.
build: deps-build
	$(SWIFT) build -c release --product fathom --static-swift-stdlib

# The lab (docs/lab.md): a two-node Kubernetes data plane in network namespaces, load on every
# access path with a live summary by path and status. The lab stays up for `fathom lab fault`.
demo: deps-lab build
	.build/release/fathom lab up
	.build/release/fathom lab load --duration 15 --out /tmp/fathom-demo-truth.jsonl
	@echo
	@echo "Recording 10 s of the lab under load, then analysing it:"
	rm -rf /tmp/fathom-demo-recording /tmp/fathom-demo.sqlite*
	.build/release/fathom lab record --duration 10 --out /tmp/fathom-demo-recording
	.build/release/fathom analyze --lab-recording /tmp/fathom-demo-recording --db /tmp/fathom-demo.sqlite
	@echo
	@echo "A guided fault: one checkout pod starts answering 500; record it, run the runbook, heal."
	.build/release/fathom lab fault pod-errors
	@sleep 3
	rm -rf /tmp/fathom-demo-fault
	.build/release/fathom lab record --duration 10 --out /tmp/fathom-demo-fault > /dev/null
	.build/release/fathom lab heal
	.build/release/fathom diagnose --service shop/frontend --lab-recording /tmp/fathom-demo-fault
	@echo
	@echo "The lab is still running. Try a fault, watch its symptom, heal it:"
	@echo "  .build/release/fathom lab faults                     # the catalog"
	@echo "  .build/release/fathom lab fault dns-nxdomain          # a Service's DNS record disappears"
	@echo "  .build/release/fathom lab load --duration 10"
	@echo "  .build/release/fathom lab record --duration 20 --out /tmp/rec && .build/release/fathom requests /tmp/rec/node-1.pcap"
	@echo "  .build/release/fathom lab heal; .build/release/fathom lab down"

deps-lab:
	$(call install_missing,$(LAB_PACKAGES))
	@# kubectl reads the lab's objects offline in a test; it comes from Kubernetes' own apt source,
	@# so it is optional here (the check is skipped without it).
	@command -v kubectl >/dev/null || apt-get install -y -q kubectl >/dev/null 2>&1 || true

# ClickHouse (a single node and a two-shard cluster, scripts/clickhouse.sh) runs for the tests only.
test: deps-test deps-lab
	$(SWIFT) build --build-tests
	scripts/clickhouse.sh start
	FATHOM_CLICKHOUSE=1 $(SWIFT) test --skip-build; status=$$?; scripts/clickhouse.sh stop; exit $$status

# Single-core comparison with tcpdump, ndpiReader and tshark on a recorded capture (README).
bench: deps-bench build
	scripts/bench.sh

# Every fault scenario of scenarios/ on the lab: fault, recording, diagnosis, score (docs/runbook.md).
scenarios: deps-lab build
	.build/release/fathom lab scenario run --all

# libFuzzer on the decoder and flow table, bounded (FUZZ_SECONDS, default 120).
FUZZ_SECONDS ?= 120
fuzz: deps-build
	$(SWIFT) build -c release --product FathomDecodeFuzz --scratch-path .build-fuzz \
	  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -parse-as-library
	mkdir -p .build-fuzz/corpus
	scripts/fuzz-seeds.sh .build-fuzz/corpus
	.build-fuzz/release/FathomDecodeFuzz .build-fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -max_len=9000

clean:
	rm -rf .build .build-fuzz
