import FathomKube
import FathomRecords
import FathomStore
import Foundation
import Testing

@testable import FathomDiagnosis

/// The runbook on a small synthetic store (no lab needed): one Service with two pods, requests
/// measured at the pods, and the decisions that depend on the window and the baseline.
@Suite struct RunbookTests {
  let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-runbook-\(UUID().uuidString)")
    .path

  static let objects = """
    {"apiVersion": "v1", "kind": "List", "items": [
      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
       "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-a", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"nodeName": "node-1", "containers": [{"name": "web"}]},
       "status": {"podIP": "10.244.1.3", "conditions": [{"type": "Ready", "status": "True"}]}},
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-b", "namespace": "shop", "labels": {"app": "web"}},
       "spec": {"nodeName": "node-2", "containers": [{"name": "web"}]},
       "status": {"podIP": "10.244.2.3", "conditions": [{"type": "Ready", "status": "True"}]}},
      {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "shop"},
       "subsets": [{"addresses": [{"ip": "10.244.1.3"}, {"ip": "10.244.2.3"}]}]}
    ]}
    """

  /// Stores one request per 100 ms per pod over [from, to) seconds, with the pod's status and
  /// latency given per second.
  func store(
    _ name: String, seconds: Range<Int64>, outcome: (_ pod: Int32, _ second: Int64) -> (RequestStatus, Int64)
  ) throws -> SQLiteStore {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let store = try SQLiteStore(path: "\(directory)/\(name).sqlite")
    let resources = [
      Resource(
        id: 1, kind: .service, namespace: "shop", name: "web", labels: [:], detail: "ClusterIP", workload: "",
        validFromMicros: 0, validToMicros: .max),
      Resource(
        id: 2, kind: .pod, namespace: "shop", name: "web-a", labels: ["app": "web"], detail: "node-1", workload: "",
        validFromMicros: 0, validToMicros: .max),
      Resource(
        id: 3, kind: .pod, namespace: "shop", name: "web-b", labels: ["app": "web"], detail: "node-2", workload: "",
        validFromMicros: 0, validToMicros: .max),
    ]
    let ids = try store.register(resources)
    guard case .read(let source, _) = try store.beginSource(path: name, size: 1, modified: 1) else {
      throw CancellationError()
    }
    var requests: [TaggedRequest] = []
    var rollups = RollupBuilder()
    for second in seconds {
      for tenth in Int64(0)..<10 {
        for pod in [Int32(2), 3] {
          let (status, micros) = outcome(pod, second)
          let start = second * 1_000_000 + tenth * 100_000
          var request = RequestLog(
            startMicros: start, endMicros: start + micros, durationMicros: micros, applicationProtocol: .http,
            clientIP: IPAddress("10.244.1.9")!, clientPort: UInt16(30000 + tenth),
            serverIP: IPAddress(pod == 2 ? "10.244.1.3" : "10.244.2.3")!,
            serverPort: 8080, flowID: UInt64(second * 100 + tenth))
          request.method = "GET"
          request.requestID = "req-\(pod)-\(second)-\(tenth)"
          request.status = status
          request.code = status == .ok ? 200 : 500
          var tags = RecordTags()
          tags.observationPoint = .server
          tags.server = EndpointIdentity(kind: .pod, pod: pod, service: 1)
          let tagged = TaggedRequest(request: request, tags: tags)
          requests.append(tagged)
          rollups.add(tagged)
        }
      }
    }
    try store.write(requests: requests, source: source, ids: ids)
    try store.write(rollups: rollups, source: source, ids: ids)
    try store.finishSource(source)
    return store
  }

  func diagnose(
    _ store: SQLiteStore, window: ClosedRange<Int64>? = nil, baseline: ClosedRange<Int64>? = nil,
    samples: [ResourceSample] = []
  ) throws -> Diagnosis {
    try Runbook(
      input: DiagnosisInput(
        store: store, objects: try KubeDecoder.decode(Self.objects), samples: samples, service: "shop/web",
        window: window, baseline: baseline)
    ).diagnose()
  }

  @Test func onePodFailingWhileItsSiblingDoesNotIsThePodsFault() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try store("pod", seconds: 100..<130) { pod, _ in pod == 2 ? (.serverError, 2_000) : (.ok, 2_000) }
    let diagnosis = try diagnose(store)
    #expect(diagnosis.verdict.first?.component == "pod shop/web-a")
    #expect(diagnosis.verdict.first?.kind == "pod errors")
    #expect(diagnosis.steps.first { $0.step == "service-golden" }?.status == .failed)
    #expect(diagnosis.steps.first { $0.step == "node-pod" }?.status == .skipped)
    // Two failed requests to follow, newest first, with where their traces break.
    #expect(diagnosis.examples.map(\.xRequestID) == ["req-2-129-9", "req-2-129-8"])
    #expect(diagnosis.examples.allSatisfy { $0.summary.contains("break point") })
    #expect(diagnosis.text.contains("EXAMPLES"))
  }

  @Test func theWindowDecidesWhatCounts() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    // Failures in seconds 100-109 only; later all is well.
    let store = try store("window", seconds: 100..<140) { pod, second in
      pod == 2 && second < 110 ? (.serverError, 2_000) : (.ok, 2_000)
    }
    #expect(try store.recordedRange() == 100_000_000...139_902_000)
    #expect(try diagnose(store, window: 100_000_000...109_999_999).verdict.first?.kind == "pod errors")
    let later = try diagnose(store, window: 120_000_000...139_999_999)
    #expect(later.verdict.isEmpty && !later.steps.contains { $0.status == .failed })
    // --since counts back from the newest record; the baseline is just before, clipped.
    let (window, baseline) = try DiagnosisInput.window(lastSeconds: 10, baselineSeconds: 60, in: store)
    #expect(window == 129_902_000...139_902_000)
    #expect(baseline == 100_000_000...129_901_999)
    #expect(DiagnosisInput.baseline(before: 100_000_000, seconds: 10, in: 100_000_000...139_902_000) == nil)
  }

  @Test func latencyAgainstTheBaseline() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    // Both pods answer in 5 ms until second 130, then in 300 ms: no pod deviates from its
    // sibling, so only the baseline shows it.
    let store = try store("latency", seconds: 100..<160) { _, second in (.ok, second < 130 ? 5_000 : 300_000) }
    let window: ClosedRange<Int64> = 130_000_000...159_999_999
    let withBaseline = try diagnose(store, window: window, baseline: 100_000_000...129_999_999)
    let finding = try #require(withBaseline.verdict.first)
    #expect(finding.component == "service shop/web" && finding.kind == "latency up")
    // Nothing failed: the examples are requests above the window's p99.
    #expect(withBaseline.examples.count == 2)
    #expect(withBaseline.examples.allSatisfy { $0.summary.contains("slowest segment") })
    #expect(withBaseline.steps.first { $0.step == "service-golden" }?.status == .warning)
    let without = try diagnose(store, window: window)
    #expect(without.verdict.isEmpty)
  }

  @Test func resourceSamplesNameTheRestartingPodTheThrottledOneAndTheDroppingNode() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try store("samples", seconds: 100..<110) { _, _ in (.ok, 2_000) }
    // Samples as the lab writes them: a pod's interface as top-level fields, a node's by name.
    let lines = [
      #"{"time":"2026-11-27T10:00:00Z","kind":"pod","namespace":"shop","name":"web-a","ready":true,"restarts":1,"cpu_periods":100,"cpu_throttled_periods":0,"interface":"eth0","rx_packets":10,"tx_packets":10}"#,
      #"{"time":"2026-11-27T10:00:00Z","kind":"pod","namespace":"shop","name":"web-b","ready":true,"restarts":0,"cpu_periods":100,"cpu_throttled_periods":10}"#,
      #"{"time":"2026-11-27T10:00:00Z","kind":"pod","namespace":"other","name":"batch","restarts":0}"#,
      #"{"time":"2026-11-27T10:00:00Z","kind":"node","name":"node-1","ready":true,"interfaces":{"eth0":{"rx_packets":1000,"tx_packets":1000,"rx_dropped":5,"tx_dropped":0}}}"#,
      #"{"time":"2026-11-27T10:00:05Z","kind":"pod","namespace":"shop","name":"web-a","ready":true,"restarts":3,"cpu_periods":200,"cpu_throttled_periods":0,"interface":"eth0","rx_packets":20,"tx_packets":20}"#,
      #"{"time":"2026-11-27T10:00:05Z","kind":"pod","namespace":"shop","name":"web-b","ready":true,"restarts":0,"cpu_periods":200,"cpu_throttled_periods":70}"#,
      #"{"time":"2026-11-27T10:00:05Z","kind":"pod","namespace":"other","name":"batch","restarts":9}"#,
      #"{"time":"2026-11-27T10:00:05Z","kind":"node","name":"node-1","ready":true,"interfaces":{"eth0":{"rx_packets":2000,"tx_packets":2000,"rx_dropped":105,"tx_dropped":0}}}"#,
    ]
    let samples = try lines.map { try JSONDecoder().decode(ResourceSample.self, from: Data($0.utf8)) }
    #expect(samples[0].interfaces["eth0"] == InterfaceCounters(rxPackets: 10, txPackets: 10))
    let diagnosis = try diagnose(store, samples: samples)
    #expect(diagnosis.steps.first { $0.step == "node-pod" }?.status == .failed)
    func finding(_ component: String) -> Finding? { diagnosis.verdict.first { $0.component == component } }
    #expect(finding("pod shop/web-a")?.kind == "pod crash loop")
    #expect(finding("pod shop/web-a")?.evidence == ["2 restarts"])
    #expect(finding("pod shop/web-b")?.kind == "cpu throttling")
    #expect(finding("node node-1")?.kind == "interface drops")
    // A pod off the target's path restarting is not the target's problem.
    #expect(finding("pod other/batch") == nil)
    // Raised thresholds silence the warnings.
    var input = DiagnosisInput(
      store: store, objects: try KubeDecoder.decode(Self.objects), samples: samples, service: "shop/web")
    input.thresholds = try Thresholds.overriding(
      json: Data(#"{"throttledShare": 0.9, "interfaceDropShare": 0.5}"#.utf8))
    let relaxed = try Runbook(input: input).diagnose()
    #expect(relaxed.verdict.map(\.component) == ["pod shop/web-a"])
  }

  /// Adds connections to Services by their ClusterIP as their clients' interfaces saw them
  /// over seconds 100-109: per (node, Service), how many, how many were answered only after a
  /// retransmitted SYN and how many never were.
  func addConnections(
    to store: SQLiteStore, _ name: String,
    _ groups: [(node: String, service: String, total: Int, late: Int, never: Int)]
  ) throws {
    let resources = [
      Resource(
        id: 10, kind: .node, namespace: "", name: "node-1", labels: [:], detail: "", workload: "",
        validFromMicros: 0, validToMicros: .max),
      Resource(
        id: 11, kind: .node, namespace: "", name: "node-2", labels: [:], detail: "", workload: "",
        validFromMicros: 0, validToMicros: .max),
      Resource(
        id: 12, kind: .service, namespace: "shop", name: "db", labels: [:], detail: "ClusterIP", workload: "",
        validFromMicros: 0, validToMicros: .max),
      Resource(
        id: 1, kind: .service, namespace: "shop", name: "web", labels: [:], detail: "ClusterIP", workload: "",
        validFromMicros: 0, validToMicros: .max),
    ]
    let ids = try store.register(resources)
    guard case .read(let source, _) = try store.beginSource(path: name, size: 1, modified: 1) else {
      throw CancellationError()
    }
    var flows: [TaggedFlow] = []
    var port = UInt16(40_000)
    for group in groups {
      for index in 0..<group.total {
        port += 1
        let start = Int64(100_000_000 + index * 9_000_000 / group.total)
        var flow = FlowLog(
          startMicros: start, endMicros: start + 20_000, l4Protocol: .tcp,
          clientIP: IPAddress(group.node == "node-1" ? "10.244.1.9" : "10.244.2.9")!, clientPort: port,
          serverIP: IPAddress(group.service == "shop/web" ? "10.96.0.20" : "10.96.0.30")!, serverPort: 80)
        let never = index < group.never
        let late = !never && index < group.never + group.late
        flow.closeType = never ? .clientSynRepeat : .finish
        flow.synRetransmissions = never ? 2 : late ? 1 : 0
        flow.clientToServer.packets = 5
        flow.serverToClient.packets = never ? 0 : 4
        var tags = RecordTags()
        tags.observationPoint = .client
        tags.captureNode = group.node == "node-1" ? 10 : 11
        tags.interface = "veth1"
        tags.server = EndpointIdentity(kind: .service, pod: 0, service: group.service == "shop/web" ? 1 : 12)
        flows.append(TaggedFlow(flow: flow, tags: tags))
      }
    }
    try store.write(flows: flows, source: source, ids: ids)
    try store.finishSource(source)
  }

  /// Stale rules on node-1: a third of its connections to web had their SYN unanswered, most
  /// answered once a retransmitted SYN found a live pod; node-2's were all answered at once, and
  /// so were node-1's to another Service. The same share on node-1's connections to every
  /// Service is the node's path, not web's rules.
  @Test func synsUnansweredFromOneNodeToOneServiceAreThatNodesStaleRules() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let stale = try store("stale", seconds: 100..<110) { _, _ in (.ok, 2_000) }
    try addConnections(
      to: stale, "stale-flows",
      [("node-1", "shop/web", 30, 8, 2), ("node-2", "shop/web", 30, 0, 0), ("node-1", "shop/db", 20, 0, 0)])
    let diagnosis = try diagnose(stale)
    let top = try #require(diagnosis.verdict.first)
    #expect(top.component == "node node-1 kube-proxy" && top.kind == "connections unanswered")
    #expect(top.evidence.first?.contains("10 of 30 connections to shop/web had their SYN unanswered") == true)
    #expect(top.evidence.first?.contains("2 never answered, 8 answered only after a retransmitted SYN") == true)

    let lossy = try store("lossy", seconds: 100..<110) { _, _ in (.ok, 2_000) }
    try addConnections(
      to: lossy, "lossy-flows",
      [("node-1", "shop/web", 30, 8, 2), ("node-2", "shop/web", 30, 0, 0), ("node-1", "shop/db", 30, 10, 0)])
    #expect(!(try diagnose(lossy)).verdict.contains { $0.component.hasSuffix("kube-proxy") })
  }

  @Test func aConfigOverridesOnlyTheThresholdsItNames() throws {
    let thresholds = try Thresholds.overriding(json: Data(#"{"errorRatioFailed": 0.5}"#.utf8))
    #expect(thresholds.errorRatioFailed == 0.5)
    #expect(thresholds.throttledShare == Thresholds().throttledShare)
    #expect(throws: ThresholdsError.self) { try Thresholds.overriding(json: Data(#"{"errorRatio": 0.5}"#.utf8)) }
    #expect(throws: ThresholdsError.self) { try Thresholds.overriding(json: Data(#"[1]"#.utf8)) }
  }
}
