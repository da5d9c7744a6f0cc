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

  func diagnose(_ store: SQLiteStore, window: ClosedRange<Int64>? = nil, baseline: ClosedRange<Int64>? = nil) throws
    -> Diagnosis
  {
    try Runbook(
      input: DiagnosisInput(
        store: store, objects: try KubeDecoder.decode(Self.objects), samples: [], service: "shop/web", window: window,
        baseline: baseline)
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
    #expect(withBaseline.steps.first { $0.step == "service-golden" }?.status == .warning)
    let without = try diagnose(store, window: window)
    #expect(without.verdict.isEmpty)
  }
}
