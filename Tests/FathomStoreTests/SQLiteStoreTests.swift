import FathomKube
import FathomRecords
import Foundation
import Testing

@testable import FathomStore

@Suite struct SQLiteStoreTests {
  let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-store-\(UUID().uuidString)")
    .path

  init() throws { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }

  func request(_ status: RequestStatus, micros: Int64, point: ObservationPoint, service: Int32, pod: Int32)
    -> TaggedRequest
  {
    var request = RequestLog(
      startMicros: 1_000, endMicros: 1_000 + micros, durationMicros: micros, applicationProtocol: .http,
      clientIP: IPAddress("10.244.1.6")!, clientPort: 40000, serverIP: IPAddress("10.244.2.3")!, serverPort: 8080,
      flowID: 1)
    request.method = "GET"
    request.status = status
    request.code = status == .ok ? 200 : 500
    var tags = RecordTags()
    tags.observationPoint = point
    tags.server = EndpointIdentity(kind: .pod, pod: pod, service: service)
    return TaggedRequest(request: request, tags: tags)
  }

  @Test func summaryTranslatesIdsAndCountsAtTheServer() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try SQLiteStore(path: "\(directory)/a.sqlite")
    let resources = [
      Resource(
        id: 1, kind: .service, namespace: "shop", name: "checkout", labels: [:], detail: "ClusterIP", workload: "",
        validFromMicros: 0, validToMicros: 10),
      Resource(
        id: 2, kind: .pod, namespace: "shop", name: "checkout-a", labels: ["app": "checkout"], detail: "node-1",
        workload: "Deployment/checkout", validFromMicros: 0, validToMicros: 10),
    ]
    let ids = try store.register(resources)
    guard case .read(let source, false) = try store.beginSource(path: "x.pcap", size: 1, modified: 1) else {
      Issue.record("new source not read")
      return
    }
    var requests = (0..<98).map { request(.ok, micros: Int64(1000 + $0), point: .server, service: 1, pod: 2) }
    requests.append(request(.serverError, micros: 50_000, point: .server, service: 1, pod: 2))
    requests.append(request(.ok, micros: 10, point: .client, service: 1, pod: 2))  // another observation point
    try store.write(requests: requests, source: source, ids: ids)
    try store.finishSource(source)
    let summary = try store.summary()
    let row = try #require(summary.services.first)
    #expect(row.namespace == "shop" && row.name == "checkout")
    #expect(row.requests == 99 && row.serverErrors == 1 && row.pods == ["checkout-a": 99])
    #expect(row.p50Micros == 1049 && row.p99Micros == 50_000)
    // SmartEncoding: the records hold ids, the names live once in the dictionary.
    let stored = try store.query("SELECT DISTINCT server_service, server_pod FROM requests")
    #expect(stored.rows == [[String(ids[1]!), String(ids[2]!)]])
  }

  /// A run killed while storing a source leaves it incomplete; the next run removes its rows and
  /// reads it again; a completed source is skipped.
  @Test func interruptedSourcesAreReadAgainAndCompleteOnesSkipped() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = "\(directory)/b.sqlite"
    do {
      let store = try SQLiteStore(path: path)
      guard case .read(let source, _) = try store.beginSource(path: "y.pcap", size: 5, modified: 7) else { return }
      try store.write(requests: [request(.ok, micros: 5, point: .server, service: 0, pod: 0)], source: source, ids: [:])
      // No finishSource: the process "died" here.
    }
    let reopened = try SQLiteStore(path: path)
    #expect(try reopened.beginSource(path: "y.pcap", size: 5, modified: 7) == .read(id: 1, restarted: true))
    #expect(try reopened.query("SELECT COUNT(*) FROM requests").rows == [["0"]])
    try reopened.finishSource(1)
    #expect(try reopened.beginSource(path: "y.pcap", size: 5, modified: 7) == .skip)
    // A changed file is a new source.
    #expect(try reopened.beginSource(path: "y.pcap", size: 6, modified: 8) == .read(id: 2, restarted: false))
  }

  @Test func queriesAreReadOnly() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try SQLiteStore(path: "\(directory)/c.sqlite")
    #expect(throws: (any Error).self) { try store.query("DELETE FROM requests") }
  }
}
