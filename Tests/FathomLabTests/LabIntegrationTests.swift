import FathomAnalyze
import FathomDiagnosis
import FathomKube
import FathomStore
import FathomTracing
import Foundation
import Testing

@testable import FathomLab

func labToolsPresent() -> Bool { (try? Shell.requireTools(Lab.requiredTools)) != nil }

/// The whole lab on real kernel networking (root only; CI runs as root): up, every access path,
/// every fault's client-visible symptom and its recovery, a recording, down without leftovers.
/// One lab exists per machine (its namespaces have fixed names), so this is one serialized test.
@Suite(.serialized, .enabled(if: getuid() == 0 && labToolsPresent()))
struct LabIntegrationTests {
  /// One request as the load generator saw it.
  struct Truth {
    var path: String
    var status: Int?
    var error: String?
    var millis: Double
    var ok: Bool { status == 200 }
  }

  /// A scenario's recording as the checks read it: when the fault was applied, when the
  /// recording ended, and the load's truth.
  struct ScenarioRecording {
    var faultApplied: Double?
    var end: Double
    var truth: [[String: Any]]

    init(directory: String) {
      let manifest =
        (try? JSONSerialization.jsonObject(with: Data((Files.read("\(directory)/manifest.json") ?? "").utf8)))
        as? [String: Any]
      faultApplied = ((manifest?["faults"] as? [[String: Any]])?.first?["applied_at"] as? String).flatMap(parseTime)
      end = (manifest?["end"] as? String).flatMap(parseTime) ?? .infinity
      truth = (Files.read("\(directory)/load-truth.jsonl") ?? "").split(separator: "\n").compactMap {
        (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
      }
    }

    /// Up to `limit` requests the client saw fail with a 5xx, sent after the fault was applied.
    func failedRequestIDs(limit: Int = 5) -> [String] {
      let applied = faultApplied ?? 0
      let ids = truth.compactMap { record -> String? in
        guard (record["status"] as? Int ?? 0) >= 500, let sent = record["start_us"] as? Int,
          Double(sent) / 1e6 >= applied
        else { return nil }
        return record["x_request_id"] as? String
      }
      return Array(ids.prefix(limit))
    }
  }

  let store = LabStore()
  let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-lab-test-\(getpid())").path

  init() throws {
    // The lab starts `fathom` for its controller, pods and load workers: the build beside this
    // test bundle.
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var candidates = [bundle.appendingPathComponent("fathom").path]
    candidates.append(bundle.deletingLastPathComponent().appendingPathComponent("fathom").path)
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/fathom")
    guard let binary = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
      throw LabError.missing("no fathom binary near \(bundle.path); run `swift build` first")
    }
    setenv("FATHOM_EXECUTABLE", binary, 1)
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
  }

  func load(_ seconds: Double, rate: Double = 5) throws -> [Truth] {
    let file = "\(scratch)/truth-\(UUID().uuidString).jsonl"
    _ = try LabLoad(store: store).run(rate: rate, duration: seconds, output: file) { _ in }
    return (Files.read(file) ?? "").split(separator: "\n").compactMap { line in
      guard let record = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
        return nil
      }
      return Truth(
        path: record["path"] as? String ?? "", status: record["status"] as? Int, error: record["error"] as? String,
        millis: Double(record["duration_us"] as? Int ?? 0) / 1000)
    }
  }

  /// Every answered request of a recording traced against the load's truth: each trace must
  /// hold every hop its path crosses, at the server pods (`s`), in path order.
  func traceCompleteness(recording: String, database: String) throws -> (
    traced: Int, complete: Int, missing: [String], perPath: [String: Int], crossings: [String: Int],
    captureDrops: [String]
  ) {
    let assembler = TraceAssembler(source: try SQLiteStore(path: database))
    let truth = (Files.read("\(recording)/load-truth.jsonl") ?? "").split(separator: "\n")
    var traced = 0
    var complete = 0
    var missing: [String] = []
    var perPath: [String: Int] = [:]
    var crossings: [String: Int] = [:]
    for line in truth {
      guard let record = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
        record["status"] as? Int == 200, let id = record["x_request_id"] as? String,
        let path = record["path"] as? String
      else { continue }
      perPath[path, default: 0] += 1
      traced += 1
      let trace = try assembler.assemble(xRequestID: id)
      let servers = (trace?.spans ?? []).filter { $0.kind == .network && $0.request.observationPoint == "s" }
        .map { String($0.request.serverPod.split(separator: "/").last ?? "") }
      var expected = ["frontend-", "checkout-", "payment-", "redis-"]
      if path == "ingress-pod" { expected.insert("ingress-nginx-controller-", at: 0) }
      if path == "ingress-hostnetwork" { expected.insert("ingress-edge-", at: 0) }
      var position = 0
      for server in servers where position < expected.count && server.hasPrefix(expected[position]) { position += 1 }
      // Same-node or cross-node: the nodes that saw the request reach the frontend pod.
      let frontendNodes = Set(
        (trace?.spans ?? []).filter {
          $0.kind == .network && $0.request.serverPod.contains("/frontend-") && $0.request.clientPod.contains("loadgen")
        }.map(\.request.node))
      if !frontendNodes.isEmpty { crossings[frontendNodes.count > 1 ? "cross-node" : "same-node", default: 0] += 1 }
      if position == expected.count {
        complete += 1
      } else if missing.count < 5 {
        missing.append("\(path) \(id): \(servers)")
      }
    }
    let drops =
      ((try? JSONSerialization.jsonObject(with: Data((Files.read("\(recording)/manifest.json") ?? "").utf8)))
      as? [String: Any])?["nodes"] as? [[String: Any]]
    let kernelDrops = (drops ?? []).map { "\($0["name"] ?? "?"): \($0["kernel_drops"] ?? "?") dropped" }
    return (traced, complete, missing, perPath, crossings, kernelDrops)
  }

  func waitUntilAllReady(_ seconds: Double) throws -> Bool {
    let deadline = now() + seconds
    while now() < deadline {
      let state = try store.load()
      if state.pods.values.allSatisfy({ $0.ready || $0.stopped }) && state.nodes.values.allSatisfy(\.ready) {
        return true
      }
      usleep(250_000)
    }
    return false
  }

  func share(_ truths: [Truth], _ predicate: (Truth) -> Bool) -> Double {
    truths.isEmpty ? 0 : Double(truths.filter(predicate).count) / Double(truths.count)
  }

  @Test func labUpPathsFaultsRecordingDown() throws {
    let lab = Lab(store: store)
    defer {
      lab.down()
      try? FileManager.default.removeItem(atPath: scratch)
    }
    let topology = try Topology.parse(yaml: Topology.defaultYAML)

    // A crashed earlier run (controller killed, everything left in place) is cleaned up by `up`.
    try lab.up(topology) { _ in }
    let crashed = try store.load().controllerPID!
    kill(crashed, SIGKILL)
    var cleaned: [String] = []
    let upStart = now()
    try lab.up(topology) { cleaned.append($0) }
    let upSeconds = now() - upStart
    #expect(cleaned.contains { $0.contains("removed leftovers") }, "up after a crash reports what it removed")
    #expect(upSeconds < 30, "lab up took \(upSeconds) s")

    // Every access path: short name and FQDN through DNS and the ClusterIP, NodePort and both
    // ingress modes from outside.
    let baseline = try load(4)
    for path in ["service-short-name", "service-fqdn", "nodeport", "ingress-pod", "ingress-hostnetwork"] {
      let requests = baseline.filter { $0.path == path }
      #expect(requests.count >= 10, "\(path): \(requests.count) requests")
      #expect(
        share(requests, \.ok) >= 0.95, "\(path): \(requests.filter { !$0.ok }.map { $0.error ?? "\($0.status!)" })")
    }
    // Same-node and cross-node pod-to-pod traffic by pod IP, and the search path by short name.
    let plan = LabPlan(topology)
    let loadgen = plan.pods.first { $0.deployment.name == "loadgen" && $0.node == "node-1" }!
    for frontend in plan.pods where frontend.deployment.name == "frontend" {
      let body = try Shell.inNamespace(loadgen.netns, ["curl", "-s", "-m", "5", "http://\(frontend.ip):8080/"])
      #expect(body.contains(frontend.name), "\(loadgen.node) → \(frontend.node) by pod IP")
    }
    let resolved = try Shell.inNamespace(loadgen.netns, ["getent", "hosts", "payment.shop"])
    #expect(resolved.contains(plan.services["shop/payment"]!.clusterIP), "payment.shop resolves via the search path")

    // Every fault: its symptom while active, recovery after heal.
    let injector = FaultInjector(store: store)
    for fault in FaultSpec.catalog {
      _ = try injector.apply(fault.name, target: nil)
      if fault.name == "node-down" { usleep(UInt32(topology.cluster.nodeMonitorGracePeriod * 1_000_000) + 1_500_000) }
      // Past the demo services' 2 s resolver cache, so every caller sees the fault.
      usleep(2_500_000)
      let during = try load(3)
      let inCluster = during.filter { $0.path.hasPrefix("service-") }
      switch fault.name {
      case "dns-nxdomain", "svc-no-endpoints", "svc-wrong-targetport", "redis-down":
        #expect(share(during) { ($0.status ?? 0) >= 500 } >= 0.9, "\(fault.name): requests fail with 5xx")
      case "dns-down":
        #expect(share(inCluster) { $0.error?.hasPrefix("dns:") == true } >= 0.5, "\(fault.name): lookups fail")
      case "dns-slow":
        let sorted = inCluster.map(\.millis).sorted()
        #expect(
          sorted.isEmpty == false && sorted[sorted.count / 2] > 350,
          "\(fault.name): median \(sorted.isEmpty ? 0 : sorted[sorted.count / 2]) ms")
      case "kube-proxy-stale":
        #expect(during.contains { !$0.ok || $0.millis > 900 }, "\(fault.name): some requests via node-1 hang or fail")
        let rules = try Shell.inNamespace(plan.node(named: "node-1")!.netns, ["iptables-save", "-t", "nat"])
        #expect(rules.contains("--to-destination 10.244."), "stale DNAT present")
      case "pod-errors":
        let failed = share(during) { $0.status == 500 }
        #expect(failed > 0.15 && failed < 0.85, "\(fault.name): \(failed) of requests fail (one of two pods)")
      case "pod-slow":
        #expect(
          during.contains { $0.millis > 1400 } && during.contains { $0.ok && $0.millis < 500 },
          "\(fault.name): some slow, some fast")
      case "pod-cpu-throttle":
        let samples = Files.read(store.samplesPath) ?? ""
        let target = try injector.pods("shop/checkout", plan: plan, first: true)[0].name
        let throttled = samples.split(separator: "\n").contains {
          $0.contains("\"name\":\"\(target)\"") && !$0.contains("\"cpu_throttled_periods\":0,")
        }
        #expect(throttled, "\(fault.name): the pod's cgroup reports throttled periods")
      case "pod-crash":
        let restarts = try store.load().pods.first { $0.key.hasPrefix("shop/payment-") }!.value.restarts
        #expect(restarts >= 1, "\(fault.name): restarts \(restarts)")
        #expect(during.contains { !$0.ok }, "\(fault.name): requests fail while the pod is down")
      case "net-loss":
        #expect(
          during.contains { !$0.ok || $0.millis > 900 },
          "\(fault.name): retransmissions show as slow or failed requests")
      case "node-down":
        let node = try store.load().nodes["node-2"]!
        #expect(!node.ready, "\(fault.name): node-2 NotReady after the grace period")
        #expect(during.contains { !$0.ok }, "\(fault.name): requests fail")
      case "ingress-wrong-backend":
        #expect(
          during.filter { $0.path.hasPrefix("ingress-") }.allSatisfy { $0.status == 503 },
          "\(fault.name): ingress answers 503")
        #expect(share(during.filter { $0.path == "nodeport" }, \.ok) >= 0.9, "\(fault.name): NodePort path unaffected")
      case "ingress-down":
        let ingressPod = during.filter { $0.path == "ingress-pod" }
        #expect(
          ingressPod.allSatisfy { $0.error?.hasPrefix("connect:") == true },
          "\(fault.name): \(ingressPod.map { $0.error ?? "\($0.status!)" })")
        #expect(
          share(during.filter { $0.path == "ingress-hostnetwork" }, \.ok) >= 0.9,
          "\(fault.name): hostNetwork ingress unaffected")
      default:
        Issue.record("fault \(fault.name) has no symptom check")
      }
      _ = try injector.heal(fault.name)
      #expect(try waitUntilAllReady(25), "\(fault.name): pods ready again after heal")
      usleep(1_000_000)
      let after = try load(2)
      #expect(
        share(after, \.ok) >= 0.9,
        "\(fault.name): recovered (\(after.filter { !$0.ok }.map { $0.error ?? "\($0.status!)" }.prefix(5)))")
    }

    // A recording: one capture per node with packets, plus objects, samples, truth, manifest.
    let recording = "\(scratch)/recording"
    try LabRecorder(store: store).record(duration: 8, output: recording, runLoad: true, rate: nil) { _ in }
    for node in plan.nodes {
      let size =
        (try? FileManager.default.attributesOfItem(atPath: "\(recording)/\(node.name).pcap")[.size] as? Int) ?? 0
      #expect(size > 10_000, "\(node.name).pcap has \(size) bytes")
    }
    for file in ["objects-events.jsonl", "objects.json", "samples.jsonl", "load-truth.jsonl", "manifest.json"] {
      #expect(FileManager.default.fileExists(atPath: "\(recording)/\(file)"), "\(file) recorded")
    }
    // The recording analysed: requests tagged with Services and answering pods, observation
    // points on both nodes, totals equal to the load's own truth within 1%.
    var analyzeOptions = Analyzer.Options()
    analyzeOptions.labRecording = recording
    analyzeOptions.database = "\(scratch)/analysis.sqlite"
    let analysis = try Analyzer(options: analyzeOptions).run { _ in }
    let truth = (Files.read("\(recording)/load-truth.jsonl") ?? "").split(separator: "\n")
    let truthErrors = truth.filter { !$0.contains("\"status\":200") }.count
    let services = Dictionary(analysis.summary.services.map { ("\($0.namespace)/\($0.name)", $0) }) { a, _ in a }
    let frontend = try #require(services["shop/frontend"])
    #expect(
      abs(frontend.requests - truth.count) <= max(1, truth.count / 100),
      "frontend \(frontend.requests) vs truth \(truth.count)")
    #expect(
      abs(frontend.serverErrors - truthErrors) <= max(1, truth.count / 100),
      "5xx \(frontend.serverErrors) vs \(truthErrors)")
    let checkout = try #require(services["shop/checkout"])
    #expect(checkout.pods.count == 2 && checkout.pods.keys.allSatisfy { $0.hasPrefix("checkout-") })
    #expect(
      abs(checkout.requests - truth.count) <= max(1, truth.count / 100),
      "checkout \(checkout.requests) vs truth \(truth.count)")
    let points = try SQLiteStore(path: analyzeOptions.database).query(
      "SELECT n.name, r.observation_point FROM requests r JOIN resources n ON n.id = r.capture_node GROUP BY 1, 2")
    for node in ["node-1", "node-2"] {
      let seen = Set(points.rows.filter { $0[0] == node }.map { $0[1] })
      #expect(seen.isSuperset(of: ["c", "s", "c-nd", "s-nd"]), "\(node): observation points \(seen)")
    }
    #expect(
      analysis.summary.dns.contains { $0.name == "frontend.shop.svc.cluster.local" && $0.rcodes["NOERROR"] ?? 0 > 0 })
    #expect(
      analysis.summary.dns.contains {
        $0.name.hasPrefix("frontend.shop.svc.cluster.local.") && $0.rcodes["NXDOMAIN"] ?? 0 > 0
      })

    // Traces: every answered request of every path, with the load's truth as the oracle (issue
    // 6's goal: at least 99% complete). A recording that falls short is printed with its capture
    // drops and recorded once more (one such run in six: 227 of 231, partial traces; the four
    // scenario recordings of the same code traced 292 of 292), so a flake shows in the log and a
    // regression still fails.
    var traces = try traceCompleteness(recording: recording, database: analyzeOptions.database)
    if traces.complete * 100 < traces.traced * 99 {
      print(
        "traces complete: \(traces.complete) of \(traces.traced); recording again. Misses: \(traces.missing); capture \(traces.captureDrops)"
      )
      let again = "\(scratch)/recording-again"
      try LabRecorder(store: store).record(duration: 8, output: again, runLoad: true, rate: nil) { _ in }
      var options = Analyzer.Options()
      options.labRecording = again
      options.database = "\(scratch)/analysis-again.sqlite"
      _ = try Analyzer(options: options).run { _ in }
      traces = try traceCompleteness(recording: again, database: options.database)
    }
    #expect(traces.perPath.count == 5, "paths traced: \(traces.perPath)")
    #expect(
      traces.crossings["same-node", default: 0] > 0 && traces.crossings["cross-node", default: 0] > 0,
      "\(traces.crossings)")
    #expect(
      traces.traced >= 150 && traces.complete * 100 >= traces.traced * 99,
      "\(traces.complete)/\(traces.traced) traces complete; \(traces.missing)")
    print(
      "traces complete: \(traces.complete) of \(traces.traced) (in-cluster \(traces.crossings)); misses: \(traces.missing); capture \(traces.captureDrops)"
    )

    // The runbook: nothing on a healthy recording of every path at once.
    let healthy = try Runbook(input: try RecordingDiagnosis.input(recording: recording, service: "shop/frontend"))
      .diagnose()
    #expect(healthy.verdict.isEmpty && !healthy.steps.contains { $0.status == .failed }, "healthy: \(healthy.text)")
    #expect(healthy.seconds < 2)

    // A representative subset of scenarios/ (make scenarios runs them all), one or two per access
    // path, through the harness: healthy baseline, fault, window, diagnosis, heal.
    let scenarioDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("scenarios").path
    let subset = [
      "healthy-nodeport", "pod-errors-ingress-hostnetwork", "svc-no-endpoints-nodeport", "dns-nxdomain-clusterip",
      "ingress-wrong-backend-ingress-pod", "kube-proxy-stale-clusterip", "net-loss-clusterip",
    ]
    // In the subset's order: net-loss last (once, the scenario right after it still saw loss on
    // node-2's uplink — an open item: the harness waits for readiness, not for the network).
    let scenarios = try Scenario.load(directory: scenarioDirectory).filter { subset.contains($0.name) }
      .sorted { subset.firstIndex(of: $0.name)! < subset.firstIndex(of: $1.name)! }
    #expect(scenarios.count == subset.count)
    let harness = ScenarioHarness(store: store, workDirectory: "\(scratch)/scenarios")
    // The trace of a failed request breaks where the fault is: the Service (and node) whose
    // span is the last to see it, or the Service a connection that was never established went
    // to (refused without endpoints; unanswered from the node with the stale rules).
    let breakAt: [String: (service: String, node: String?)] = [
      "pod-errors": ("shop/checkout", nil), "svc-no-endpoints": ("shop/payment", nil),
      "dns-nxdomain": ("shop/frontend", nil), "ingress-wrong-backend": ("kube-system/ingress", nil),
      "kube-proxy-stale": ("shop/checkout", "node-1"),
    ]
    for scenario in scenarios {
      let directory = "\(scratch)/scenarios/\(scenario.name)"
      var outcome = try harness.run(scenario) { _ in }
      var recording = ScenarioRecording(directory: directory)
      // A miss is printed and the scenario recorded once more; the second must be right. (Seen
      // once: kube-proxy-stale via ClusterIP with the stale node's verdict missing; make
      // scenarios scores single runs only.) So is a recording without a failed request to
      // trace: kube-proxy-stale fails about one request in ten, not one in four — the captures
      // show SYNs retransmitted to the dead endpoint balanced anew, often to the live pod —
      // and once in CI failed none in the window.
      let nothingToTrace = breakAt[scenario.fault] != nil && recording.failedRequestIDs().isEmpty
      if outcome.rank != 1 || nothingToTrace {
        print(
          "scenario \(scenario.name) missed (rank \(outcome.rank), top \(outcome.got), failed requests \(recording.failedRequestIDs().count)); running it again"
        )
        #expect(try waitUntilAllReady(25))
        outcome = try harness.run(scenario) { _ in }
        recording = ScenarioRecording(directory: directory)
      }
      #expect(outcome.rank == 1, "\(scenario.name): top verdict \(outcome.got), expected \(outcome.expected)")
      #expect(outcome.seconds < 2, "\(scenario.name): \(outcome.seconds) s to verdict")
      #expect(try waitUntilAllReady(25))
      guard scenario.fault != "none" else { continue }
      let faultApplied = recording.faultApplied
      let recordingEnd = recording.end
      let truthRecords = recording.truth
      let assembler = TraceAssembler(source: try SQLiteStore(path: "\(directory)/fathom.sqlite"))
      if scenario.fault == "net-loss" {
        // Slow requests (answered, within the window and the capture): the segment that adds
        // the latency is one that crosses the lossy node — a handshake that waited for a
        // retransmitted SYN, an uplink, or a span on that node — not a pod's own work elsewhere.
        var verdicts: [String] = []
        for record in truthRecords {
          guard record["status"] as? Int == 200, let sent = record["start_us"] as? Int,
            let micros = record["duration_us"] as? Int, micros > 200_000,
            Double(sent) / 1e6 > (faultApplied ?? 0) + 3, Double(sent + micros) / 1e6 < recordingEnd - 0.5,
            let id = record["x_request_id"] as? String, let trace = try assembler.assemble(xRequestID: id),
            let slowest = trace.slowestSegment
          else { continue }
          let span = trace.spans[slowest]
          let crosses =
            span.request.node == "node-2" || span.kind == .connect
            || ["c-nd", "s-nd"].contains(span.request.observationPoint)
          verdicts.append(
            "\(crosses ? "ok" : "wrong") \(span.kind) \(span.request.observationPoint) \(span.request.node) \(span.selfMicros / 1000) ms"
          )
        }
        let right = verdicts.filter { $0.hasPrefix("ok") }.count
        #expect(verdicts.count >= 5 && right * 3 >= verdicts.count * 2, "net-loss slowest segments: \(verdicts)")
        print("net-loss: \(right) of \(verdicts.count) slow requests' slowest segment crosses node-2")
        continue
      }
      // A request cut by the recording's start or end can miss its deeper spans, so a majority
      // of up to five failed requests must break there.
      let expected = try #require(breakAt[scenario.fault])
      let failedIDs = recording.failedRequestIDs()
      var places: [String] = []
      for id in failedIDs {
        let trace = try assembler.assemble(xRequestID: id)
        guard let trace, let breakPoint = trace.breakPoint else {
          places.append("no break point")
          continue
        }
        let request = trace.spans[breakPoint.span].request
        let right =
          (request.serverPod.hasPrefix(expected.service) || request.serverService.hasPrefix(expected.service))
          && (expected.node == nil || request.node == expected.node)
        places.append("\(right ? "ok" : "wrong") \(request.serverPod) \(request.serverService) on \(request.node)")
      }
      let right = places.filter { $0.hasPrefix("ok") }.count
      #expect(
        !places.isEmpty && right * 2 > places.count, "\(scenario.name): break points \(places), expected \(expected)")

      // --from narrows the target's own evidence to the caller: frontend looks checkout up (and
      // fails), the load generator never does.
      if scenario.fault == "dns-nxdomain" {
        var input = try RecordingDiagnosis.input(recording: directory, service: "shop/checkout")
        input.from = "shop/frontend"
        #expect(try Runbook(input: input).diagnose().verdict.first?.kind == "record missing")
        input.from = "shop/loadgen"
        let unrelated = try Runbook(input: input).diagnose()
        #expect(!unrelated.verdict.contains { $0.kind == "record missing" })
        #expect(unrelated.verdict.first?.kind == "no traffic captured")
      }
    }

    // ClickHouse as the runbook's input: the same recording analysed into ClickHouse gives the
    // same checklist and verdict as SQLite (when make test has started ClickHouse).
    let clickhouseURL = "http://127.0.0.1:18123"
    if (try? String(contentsOf: URL(string: "\(clickhouseURL)/?query=SELECT%201")!, encoding: .utf8)) != nil {
      let directory = "\(scratch)/scenarios/pod-errors-ingress-hostnetwork"
      var target = ClickHouseStore.Target(url: clickhouseURL)
      target.database = "fathom_labtest_\(getpid())"
      var options = Analyzer.Options()
      options.labRecording = directory
      options.clickhouse = target
      _ = try Analyzer(options: options).run { _ in }
      let clickhouse = try ClickHouseStore(target)
      defer { _ = try? clickhouse.execute("DROP DATABASE IF EXISTS \(target.database)") }
      var input = try RecordingDiagnosis.input(recording: directory, service: "shop/frontend")
      let fromSQLite = try Runbook(input: input).diagnose()
      input.store = clickhouse
      let fromClickHouse = try Runbook(input: input).diagnose()
      #expect(fromSQLite.steps.map(\.status) == fromClickHouse.steps.map(\.status))
      // Figures alike; the example traces' lines may list spans of equal start in another order.
      func figures(_ diagnosis: Diagnosis) -> [[String]] {
        diagnosis.steps.map { $0.evidence.filter { !$0.hasPrefix("trace ") } }
      }
      #expect(figures(fromSQLite) == figures(fromClickHouse))
      #expect(fromSQLite.verdict.map(\.component) == fromClickHouse.verdict.map(\.component))
      #expect(fromClickHouse.verdict.first?.kind == "pod errors")
    }

    // kubectl reads the replayed objects offline.
    if (try? Shell.resolve("kubectl")) != nil {
      let names = try Shell.run([
        "kubectl", "label", "--local", "-f", "\(recording)/objects.json", "check=1", "-o", "name",
      ])
      #expect(names.contains("pod/") && names.contains("endpoints/checkout") && names.contains("node/node-2"))
    }

    let downStart = now()
    lab.down()
    #expect(now() - downStart < 10, "lab down took \(now() - downStart) s")
    #expect(lab.leftovers().isEmpty, "left behind: \(lab.leftovers())")
  }
}
