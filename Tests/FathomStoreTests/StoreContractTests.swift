import FathomHTTP
import FathomKube
import FathomRecords
import FathomTestSupport
import Foundation
import Testing

@testable import FathomStore

/// Where the same storage tests run: SQLite always; ClickHouse single node and two-shard cluster
/// when `make test` has started them (it sets FATHOM_CLICKHOUSE=1, and then they must answer).
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
  case sqlite, clickhouse, clickhouseCluster
  var testDescription: String { rawValue }

  static var available: [StoreKind] {
    let required = ProcessInfo.processInfo.environment["FATHOM_CLICKHOUSE"] == "1"
    let reachable =
      (try? String(contentsOf: URL(string: "http://127.0.0.1:18123/?query=SELECT%201")!, encoding: .utf8)) != nil
    return required || reachable ? allCases : [.sqlite]
  }

  func database(_ name: String) -> String { "fathom_test_\(rawValue)_\(name)_\(getpid())" }

  /// A store; called again with the same name, the same store (as a new process would open it).
  func make(_ name: String, directory: String) throws -> RecordStore {
    switch self {
    case .sqlite: return try SQLiteStore(path: "\(directory)/\(name).sqlite")
    case .clickhouse, .clickhouseCluster: return try ClickHouseStore(clickHouseTarget(name)!)
    }
  }

  /// The ClickHouse store `make` opens; nil for SQLite.
  func clickHouseTarget(_ name: String) -> ClickHouseStore.Target? {
    switch self {
    case .sqlite: return nil
    case .clickhouse:
      var target = ClickHouseStore.Target(url: "http://127.0.0.1:18123")
      target.database = database(name)
      return target
    case .clickhouseCluster:
      var target = ClickHouseStore.Target(url: "http://127.0.0.1:18124")
      target.database = database(name)
      target.cluster = "fathom_cluster"
      target.shards = ["http://127.0.0.1:18124", "http://127.0.0.1:18125"]
      return target
    }
  }

  func drop(_ name: String) {
    guard self != .sqlite else { return }
    for server in ["http://127.0.0.1:18123", "http://127.0.0.1:18124", "http://127.0.0.1:18125"] {
      let sql = Array("DROP DATABASE IF EXISTS \(database(name))".utf8)
      _ = try? sql.withUnsafeBytes { try CurlClient.perform(CurlClient.Request(url: server, body: $0)) }
    }
  }
}

/// A class so that each test's directory goes in `deinit`, also for the tests that never write
/// into it (as a struct, those left an empty directory behind every run).
@Suite final class StoreContractTests {
  let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-store-\(UUID().uuidString)")
    .path

  init() throws { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }

  deinit { try? FileManager.default.removeItem(atPath: directory) }

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

  @Test(arguments: StoreKind.available) func summaryTranslatesIdsAndCountsAtTheServer(_ kind: StoreKind) throws {
    defer {
      try? FileManager.default.removeItem(atPath: directory)
      kind.drop("summary")
    }
    let store = try kind.make("summary", directory: directory)
    let resources = [
      Resource(
        id: 1, kind: .service, namespace: "shop", name: "checkout", labels: [:], detail: "ClusterIP", workload: "",
        validFromMicros: 0, validToMicros: 10),
      Resource(
        id: 2, kind: .pod, namespace: "shop", name: "checkout-a", labels: ["app": "checkout"], detail: "node-1",
        workload: "Deployment/checkout", validFromMicros: 0, validToMicros: 10),
    ]
    let ids = try store.register(resources)
    guard case .read(let source, false) = try store.beginSource(path: "\(directory)/x.pcap", size: 1, modified: 1)
    else {
      Issue.record("new source not read")
      return
    }
    var requests = (0..<98).map { request(.ok, micros: Int64(1000 + $0), point: .server, service: 1, pod: 2) }
    requests.append(request(.serverError, micros: 50_000, point: .server, service: 1, pod: 2))
    requests.append(request(.ok, micros: 10, point: .client, service: 1, pod: 2))  // another observation point
    try store.write(requests: requests, source: source, ids: ids)
    var rollups = RollupBuilder()
    for request in requests { rollups.add(request) }
    try store.write(rollups: rollups, source: source, ids: ids)
    try store.finishSource(source)
    let summary = try store.summary()
    let row = try #require(summary.services.first)
    #expect(row.namespace == "shop" && row.name == "checkout")
    #expect(row.requests == 99 && row.serverErrors == 1 && row.pods == ["checkout-a": 99])
    // Percentiles come from the rollups' histograms: within 1/16 of the exact 1,049 and 50,000.
    #expect(abs(row.p50Micros - 1049) <= 1049 / 16 + 1 && abs(row.p99Micros - 50_000) <= 50_000 / 16 + 1)
    // RED of one Service over a time range, from the rollups.
    let red = try #require(try store.red(namespace: "shop", name: "checkout", fromMicros: 0, toMicros: 10_000_000))
    #expect(red.requests == 99 && red.serverErrors == 1 && red.pods == ["checkout-a": 99])
    #expect(
      try store.red(namespace: "shop", name: "checkout", fromMicros: 10_000_000, toMicros: 20_000_000)?.requests ?? 0
        == 0)
    #expect(try store.red(namespace: "shop", name: "nothing", fromMicros: 0, toMicros: 10_000_000) == nil)
    // SmartEncoding: the records hold ids, the names live once in the dictionary.
    if let sqlite = store as? SQLiteStore {
      let stored = try sqlite.query("SELECT DISTINCT server_service, server_pod FROM requests")
      #expect(stored.rows == [[String(ids[1]!), String(ids[2]!)]])
    }
    if let clickhouse = store as? ClickHouseStore {
      let stored = try clickhouse.rows(
        "SELECT DISTINCT server_service, server_pod FROM \(clickhouse.target.database).requests")
      #expect(stored == [[String(UInt64(bitPattern: ids[1]!)), String(UInt64(bitPattern: ids[2]!))]])
    }
  }

  /// Rollups written in pieces as intervals close (a long analysis), plus a late record for an
  /// interval already written: the stores sum the partial rows, so RED is what one write gives.
  @Test(arguments: StoreKind.available) func rollupsWrittenInPiecesSumLikeOne(_ kind: StoreKind) throws {
    defer {
      try? FileManager.default.removeItem(atPath: directory)
      kind.drop("pieces")
    }
    let store = try kind.make("pieces", directory: directory)
    guard let (ids, source) = try checkoutAndNewSource(store, path: "p.pcap") else { return }
    func at(_ seconds: Int64, _ status: RequestStatus = .ok) -> TaggedRequest {
      var tagged = request(status, micros: 1_000, point: .server, service: 1, pod: 2)
      tagged.request.startMicros = seconds * 1_000_000
      tagged.request.endMicros = seconds * 1_000_000 + 1_000
      return tagged
    }
    var rollups = RollupBuilder()
    for second in 0..<180 { rollups.add(at(Int64(second), second % 30 == 0 ? .serverError : .ok)) }
    let early = rollups.takeIntervals(endedBy: 120_000_000)
    #expect(early.requestRollups(60).count == 2 && rollups.requestRollups(60).count == 1)
    try store.write(rollups: early, source: source, ids: ids)
    rollups.add(at(10))  // late: its second and minute were written already
    try store.write(rollups: rollups, source: source, ids: ids)
    try store.finishSource(source)
    let all = try #require(try store.red(namespace: "shop", name: "checkout", fromMicros: 0, toMicros: 180_000_000))
    #expect(all.requests == 181 && all.serverErrors == 6)
    let first = try #require(try store.red(namespace: "shop", name: "checkout", fromMicros: 0, toMicros: 60_000_000))
    #expect(first.requests == 61 && first.serverErrors == 2)
  }

  /// Rollups as `fathom analyze` writes them (`SourceRollups`): closed intervals while records
  /// arrive, the rest at the end, each write split into several transactions or inserts (7 hours
  /// of 1 s intervals is 25,200 rows, more than one block). Every interval is stored once and RED
  /// counts every record.
  @Test(arguments: StoreKind.available) func sourceRollupsWriteClosedIntervalsAndTheRest(_ kind: StoreKind) throws {
    defer {
      try? FileManager.default.removeItem(atPath: directory)
      kind.drop("closing")
    }
    let store = try kind.make("closing", directory: directory)
    guard let (ids, source) = try checkoutAndNewSource(store, path: "c.pcap") else { return }
    let seconds: Int64 = 7 * 3_600
    var rollups = SourceRollups(source: source, checkEvery: 3_000)
    var writtenEarly = 0
    for second in 0..<seconds {
      var tagged = request(second % 50 == 0 ? .serverError : .ok, micros: 1_000, point: .server, service: 1, pod: 2)
      tagged.request.startMicros = second * 1_000_000
      tagged.request.endMicros = second * 1_000_000 + 1_000
      rollups.add(tagged)
      try rollups.writeClosed(to: store, ids: ids)
      if second == seconds / 2 { writtenEarly = try rollupRows(store, "request_rollup_1s") }
    }
    try rollups.writeAll(to: store, ids: ids)
    try store.finishSource(source)
    // Half way, what ended 15 minutes before the newest record was stored already.
    #expect(writtenEarly >= Int(seconds / 2) - 900 - 3_000 && writtenEarly <= Int(seconds / 2) - 900)
    #expect(try rollupRows(store, "request_rollup_1s") == Int(seconds))
    #expect(try rollupRows(store, "request_rollup_1m") == Int(seconds / 60))
    let red = try #require(
      try store.red(namespace: "shop", name: "checkout", fromMicros: 0, toMicros: seconds * 1_000_000))
    #expect(red.requests == Int(seconds) && red.serverErrors == Int(seconds / 50))
  }

  /// Registers Service shop/checkout (id 1) and its pod checkout-a (id 2) and begins a new source.
  func checkoutAndNewSource(_ store: RecordStore, path: String) throws -> (ids: [Int32: Int64], source: Int64)? {
    let ids = try store.register([
      Resource(
        id: 1, kind: .service, namespace: "shop", name: "checkout", labels: [:], detail: "ClusterIP", workload: "",
        validFromMicros: 0, validToMicros: 100_000_000_000),
      Resource(
        id: 2, kind: .pod, namespace: "shop", name: "checkout-a", labels: [:], detail: "node-1", workload: "",
        validFromMicros: 0, validToMicros: 100_000_000_000),
    ])
    guard case .read(let source, false) = try store.beginSource(path: "\(directory)/\(path)", size: 1, modified: 1)
    else {
      Issue.record("new source not read")
      return nil
    }
    return (ids, source)
  }

  /// Rows of a rollup table, from either store.
  func rollupRows(_ store: RecordStore, _ table: String) throws -> Int {
    if let sqlite = store as? SQLiteStore {
      return Int(try sqlite.query("SELECT count(*) FROM \(table)").rows.first?.first ?? "") ?? -1
    }
    if let clickhouse = store as? ClickHouseStore {
      return Int(try clickhouse.rows("SELECT count() FROM \(clickhouse.target.database).\(table)").first?.first ?? "")
        ?? -1
    }
    return -1
  }

  /// A run killed while storing a source leaves it incomplete; the next run removes its rows and
  /// reads it again; a completed source is skipped.
  @Test(arguments: StoreKind.available) func interruptedSourcesAreReadAgainAndCompleteOnesSkipped(_ kind: StoreKind)
    throws
  {
    defer {
      try? FileManager.default.removeItem(atPath: directory)
      kind.drop("resume")
    }
    var first: Int64 = 0
    do {
      let store = try kind.make("resume", directory: directory)
      guard case .read(let source, _) = try store.beginSource(path: "y.pcap", size: 5, modified: 7) else { return }
      first = source
      try store.write(requests: [request(.ok, micros: 5, point: .server, service: 0, pod: 0)], source: source, ids: [:])
      // No finishSource: the process "died" here.
    }
    let reopened = try kind.make("resume", directory: directory)
    #expect(try reopened.beginSource(path: "y.pcap", size: 5, modified: 7) == .read(id: first, restarted: true))
    #expect(try reopened.summary().requests == 0)
    try reopened.finishSource(first)
    #expect(try reopened.beginSource(path: "y.pcap", size: 5, modified: 7) == .skip)
    // A changed file is a new source.
    guard case .read(let second, false) = try reopened.beginSource(path: "y.pcap", size: 6, modified: 8) else {
      Issue.record("a changed file is not a new source")
      return
    }
    #expect(second != first)
  }

  /// ClickHouse: records land on both shards of the cluster; retention drops whole hourly
  /// partitions.
  @Test(arguments: StoreKind.available.filter { $0 != .sqlite })
  func clickhouseShardsAndRetention(_ kind: StoreKind) throws {
    defer { kind.drop("retention") }
    let store = try #require(try kind.make("retention", directory: directory) as? ClickHouseStore)
    guard case .read(let source, _) = try store.beginSource(path: "z.pcap", size: 1, modified: 1) else { return }
    let hour: Int64 = 3_600_000_000
    let base: Int64 = 1_764_000_000_000_000 - 1_764_000_000_000_000 % hour
    var requests: [TaggedRequest] = []
    for index in 0..<200 {
      var record = request(.ok, micros: 10, point: .server, service: 0, pod: 0)
      record.request.startMicros = base + (index < 100 ? 0 : hour) + Int64(index)
      requests.append(record)
    }
    try store.write(requests: requests, source: source, ids: [:])
    var rollups = RollupBuilder()
    for request in requests { rollups.add(request) }
    try store.write(rollups: rollups, source: source, ids: [:])
    try store.finishSource(source)
    let database = store.target.database
    if kind == .clickhouseCluster {
      let counts = try store.target.shards.map {
        Int(try store.rows("SELECT count() FROM \(database).requests_local", on: $0).first?.first ?? "0") ?? 0
      }
      #expect(counts.allSatisfy { $0 > 0 } && counts.reduce(0, +) == 200, "rows per shard \(counts)")
    }
    #expect(try store.summary().requests == 200)
    let dropped = try store.dropPartitions(olderThan: base + hour)
    #expect(dropped >= 1)
    #expect(try store.summary().requests == 100)
  }

  /// The same request at the client's and the server's interface, linked by sequence number and
  /// X-Request-ID, reads back the same from every store (what trace assembly relies on).
  @Test(arguments: StoreKind.available) func traceLookupsAgreeAcrossStores(_ kind: StoreKind) throws {
    defer {
      try? FileManager.default.removeItem(atPath: directory)
      kind.drop("trace")
    }
    let store = try kind.make("trace", directory: directory)
    guard let source = store as? TraceSource else {
      Issue.record("\(kind) is not a trace source")
      return
    }
    let resources = [
      Resource(
        id: 1, kind: .service, namespace: "shop", name: "web", labels: [:], detail: "ClusterIP", workload: "",
        validFromMicros: 0, validToMicros: 10),
      Resource(
        id: 2, kind: .pod, namespace: "shop", name: "web-a", labels: [:], detail: "node-1", workload: "",
        validFromMicros: 0, validToMicros: 10),
    ]
    let ids = try store.register(resources)
    guard case .read(let sourceID, _) = try store.beginSource(path: "trace.pcap", size: 1, modified: 1) else { return }
    var records: [TaggedRequest] = []
    for (point, start, status) in [
      (ObservationPoint.client, Int64(5_000), RequestStatus.serverError), (.server, 5_100, .serverError),
    ] {
      var tagged = request(status, micros: 900, point: point, service: 1, pod: 2)
      tagged.request.startMicros = start
      tagged.request.requestTCPSequence = 4242
      tagged.request.requestID = "xid-1"
      tagged.request.code = 503
      records.append(tagged)
    }
    try store.write(requests: records, source: sourceID, ids: ids)
    try store.finishSource(sourceID)
    let byID = try source.requests(xRequestID: "xid-1")
    #expect(byID.count == 2)
    #expect(Set(byID.map(\.observationPoint)) == ["c", "s"])
    #expect(byID.allSatisfy { $0.serverService == "shop/web" && $0.serverPod == "shop/web-a" && $0.code == 503 })
    #expect(try source.requests(requestSequence: 4242, from: 4_000, to: 6_000).count == 2)
    let one = try #require(byID.first)
    #expect(try source.request(id: one.id)?.startMicros == one.startMicros)
    #expect(
      try source.candidates(service: "shop/web", onlyErrors: true, slowerThanMicros: nil, since: 0, limit: 5).count == 1
    )
  }

  /// The runbook's questions (flows overlapping a window counted, packets lost inside a node, requests of one protocol at one
  /// observation point, server rollups, the recorded range) get the same answers from every store.
  @Test(arguments: StoreKind.available) func diagnosisQueriesAgreeAcrossStores(_ kind: StoreKind) throws {
    defer {
      try? FileManager.default.removeItem(atPath: directory)
      kind.drop("diagnosis")
    }
    let store = try kind.make("diagnosis", directory: directory)
    guard let source = store as? DiagnosisSource else {
      Issue.record("\(kind) is not a diagnosis source")
      return
    }
    let resources = [
      Resource(
        id: 1, kind: .service, namespace: "shop", name: "web", labels: [:], detail: "ClusterIP", workload: "",
        validFromMicros: 0, validToMicros: 100_000_000),
      Resource(
        id: 2, kind: .pod, namespace: "shop", name: "web-a", labels: [:], detail: "node-1", workload: "",
        validFromMicros: 0, validToMicros: 100_000_000),
      Resource(
        id: 3, kind: .node, namespace: "", name: "node-1", labels: [:], detail: "", workload: "",
        validFromMicros: 0, validToMicros: 100_000_000),
    ]
    let ids = try store.register(resources)
    guard case .read(let sourceID, _) = try store.beginSource(path: "diag.pcap", size: 1, modified: 1) else { return }
    // One refused connection to the ClusterIP at second 10, one long flow over seconds 5-30.
    var flows: [TaggedFlow] = []
    for (start, end, close) in [
      (Int64(10_000_000), Int64(10_001_000), CloseType.serverReset), (5_000_000, 30_000_000, .timeout),
    ] {
      var flow = FlowLog(
        startMicros: start, endMicros: end, l4Protocol: .tcp, clientIP: IPAddress("10.244.1.6")!, clientPort: 40001,
        serverIP: IPAddress("10.96.0.20")!, serverPort: 80)
      flow.closeType = close
      flow.clientToServer.packets = 3
      flow.serverToClient.packets = 2
      flow.clientToServer.retransmissions = 1
      var tags = RecordTags()
      tags.observationPoint = .client
      tags.captureNode = 3
      tags.interface = "eth0"
      tags.server = EndpointIdentity(kind: .service, pod: 0, service: 1)
      flows.append(TaggedFlow(flow: flow, tags: tags))
    }
    // Connections seen at node-1's uplink and at a pod's interface: inbound the pod's interface
    // got one client packet less; outbound the uplink got one answer packet the pod never did
    // (behind the ClusterIP the uplink sees the pod). One uplink flow has no counterpart. Port
    // 50004 is reused within the second for a call to a pod on the same node (no uplink leg):
    // which of the two the uplink saw is unknown, so neither is a loss.
    for (point, port, server, c2s, s2c) in [
      (ObservationPoint.serverNode, 50001, "10.244.1.7", UInt64(3), UInt64(2)), (.server, 50001, "10.244.1.7", 2, 2),
      (.clientNode, 50002, "10.244.2.9", 4, 3), (.client, 50002, "10.96.0.20", 4, 2),
      (.serverNode, 50003, "10.244.1.7", 9, 9),
      (.clientNode, 50004, "10.244.2.9", 6, 4), (.client, 50004, "10.96.0.20", 6, 4),
      (.client, 50004, "10.96.0.21", 6, 4),
    ] {
      var flow = FlowLog(
        startMicros: 11_000_000, endMicros: 11_002_000, l4Protocol: .tcp, clientIP: IPAddress("10.244.2.5")!,
        clientPort: UInt16(port), serverIP: IPAddress(server)!, serverPort: 80)
      flow.closeType = .finish
      flow.clientToServer.packets = c2s
      flow.serverToClient.packets = s2c
      var tags = RecordTags()
      tags.observationPoint = point
      tags.captureNode = 3
      tags.interface = point == .serverNode || point == .clientNode ? "eth0" : "veth1"
      flows.append(TaggedFlow(flow: flow, tags: tags))
    }
    try store.write(flows: flows, source: sourceID, ids: ids)
    // Requests at the server pod: two in second 12 (one failed), one in second 40.
    var requests: [TaggedRequest] = []
    var rollups = RollupBuilder()
    for (start, status) in [(Int64(12_000_000), RequestStatus.ok), (12_500_000, .serverError), (40_000_000, .ok)] {
      var tagged = request(status, micros: 2_000, point: .server, service: 1, pod: 2)
      tagged.request.startMicros = start
      tagged.request.endMicros = start + 2_000
      requests.append(tagged)
      rollups.add(tagged)
    }
    try store.write(requests: requests, source: sourceID, ids: ids)
    try store.write(rollups: rollups, source: sourceID, ids: ids)
    try store.finishSource(sourceID)

    #expect(try source.recordedRange() == 5_000_000...40_002_000)
    let window = Int64(9_000_000)...20_000_000
    let summary = try source.flowSummary(from: window.lowerBound, to: window.upperBound)
    let toService = summary.counts.filter { $0.serverService == "shop/web" }
    #expect(toService.count == 2)
    #expect(toService.allSatisfy { $0.node == "node-1" && $0.observationPoint == "c" && $0.interface == "eth0" })
    #expect(toService.map(\.closeType).sorted() == ["server_reset", "timeout"])
    #expect(toService.allSatisfy { $0.flows == 1 && $0.packets == 5 && $0.retransmissions == 1 })
    #expect(summary.counts.reduce(0) { $0 + $1.flows } == 10)
    #expect(summary.pathLoss == [NodePathLoss(node: "node-1", lostPackets: 2, packets: 12)])
    // What a server tried to call while serving a request: its connections by address and time.
    let calls = try source.connections(clientIP: "10.244.2.5", from: 10_500_000, to: 11_500_000)
    #expect(calls.count == 8 && calls.allSatisfy { $0.closeType == "finish" && $0.node == "node-1" })
    #expect(try source.connections(clientIP: "10.244.2.5", from: 12_000_000, to: 13_000_000).isEmpty)
    // The handshake lookup: one client port in a window (SQLite seeks it per 16 s bucket; this
    // window spans two).
    let port = try source.connections(clientIP: "10.244.2.5", clientPort: 50004, from: 10_000_000, to: 17_000_000)
    #expect(port.count == 3 && port.allSatisfy { $0.clientPort == 50004 })
    #expect(try source.connections(clientIP: "10.244.2.5", clientPort: 50004, from: 11_500_000, to: 40_000_000).isEmpty)
    #expect(try source.connections(clientIP: "10.244.2.6", clientPort: 50004, from: 10_000_000, to: 17_000_000).isEmpty)
    let later = try source.flowSummary(from: 31_000_000, to: 50_000_000)
    #expect(later.counts.isEmpty && later.pathLoss.isEmpty)
    let served = try source.requests(
      protocolName: "http", observationPoint: "s", from: window.lowerBound, to: window.upperBound)
    #expect(served.count == 2 && served.allSatisfy { $0.serverPod == "shop/web-a" })
    #expect(try source.requests(protocolName: "dns", observationPoint: "s", from: 0, to: 50_000_000).isEmpty)
    let rolled = try source.serverRollups(from: window.lowerBound, to: window.upperBound)
    #expect(rolled.reduce(0) { $0 + $1.requests } == 2 && rolled.reduce(0) { $0 + $1.serverErrors } == 1)
    #expect(rolled.allSatisfy { $0.service == "shop/web" && $0.pod == "shop/web-a" })
    // Beyond an hour the 1-minute rollups answer: all three requests fall in minute 0.
    let long = try source.serverRollups(from: 0, to: 7_200_000_000)
    #expect(long.reduce(0) { $0 + $1.requests } == 3)
  }

  /// Few buckets are kept in place and more spill to an array: at every size across the switch,
  /// in every insertion order tried, the entries are the sorted counts of a plain dictionary.
  @Test func histogramEntriesAgreeWithADictionaryAcrossTheSpill() {
    var seed: UInt64 = 7
    for size in 1...9 {
      for _ in 0..<50 {
        var histogram = LatencyHistogram()
        var reference: [Int: UInt64] = [:]
        for _ in 0..<(size * 3) {
          seed = seed &* 6_364_136_223_846_793_005 &+ 1
          let bucket = Int(seed >> 40) % size * 20 + 16  // `size` distinct buckets, at most
          let value = LatencyHistogram.value(bucket)
          histogram.add(value)
          reference[LatencyHistogram.bucket(value), default: 0] += 1
        }
        let expected = reference.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
        #expect(histogram.encoded == expected)
        #expect(histogram.total == reference.values.reduce(0, +))
        var merged = LatencyHistogram()
        merged.merge(histogram)
        merged.merge(histogram)
        #expect(merged.total == 2 * histogram.total && LatencyHistogram(encoded: histogram.encoded) == histogram)
      }
    }
  }

  @Test func histogramQuantilesAreWithinTheBucketPrecision() {
    var histogram = LatencyHistogram()
    var values: [Int64] = []
    var seed: UInt64 = 42
    for _ in 0..<10_000 {
      seed = seed &* 6_364_136_223_846_793_005 &+ 1
      let value = Int64(seed >> 44)  // 0 ..< 1M µs
      values.append(value)
      histogram.add(value)
    }
    values.sort()
    for p in [0.5, 0.9, 0.99] {
      let exact = values[Int(Double(values.count) * p)]
      #expect(abs(histogram.quantile(p) - exact) <= exact / 16 + 1, "p\(p): \(histogram.quantile(p)) vs \(exact)")
    }
    var halves = [LatencyHistogram(), LatencyHistogram()]
    for (index, value) in values.enumerated() { halves[index % 2].add(value) }
    halves[0].merge(halves[1])
    #expect(halves[0] == histogram)
    #expect(LatencyHistogram(encoded: histogram.encoded) == histogram)
    for micros: Int64 in [0, 15, 16, 17, 1000, 123_456, 9_999_999] {
      let middle = LatencyHistogram.value(LatencyHistogram.bucket(micros))
      #expect(abs(middle - micros) <= micros / 16 + 1, "\(micros) → \(middle)")
    }
  }

  @Test func sqliteQueriesAreReadOnly() throws {
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try SQLiteStore(path: "\(directory)/c.sqlite")
    #expect(throws: (any Error).self) { try store.query("DELETE FROM requests") }
  }
}

/// ClickHouse failing in the middle of an ingest (here: the requests table renamed away under
/// it, then back): the source cannot be completed and the error names the server; the source
/// stays incomplete, so a re-run reads it again.
@Test func aClickHouseFailingMidIngestIsAnErrorNotAMissingBatch() throws {
  guard StoreKind.available.contains(.clickhouse) else { return }
  let kind = StoreKind.clickhouse
  defer { kind.drop("failing") }
  let store = try #require(try kind.make("failing", directory: NSTemporaryDirectory()) as? ClickHouseStore)
  guard case .read(let source, _) = try store.beginSource(path: "failing.pcap", size: 1, modified: 1) else {
    Issue.record("source not accepted")
    return
  }
  let database = store.target.database
  try store.execute("RENAME TABLE \(database).requests TO \(database).requests_away")
  var request = RequestLog(
    startMicros: 1_000, endMicros: 2_000, durationMicros: 1_000, applicationProtocol: .http,
    clientIP: IPAddress("10.0.0.1")!, clientPort: 1, serverIP: IPAddress("10.0.0.2")!, serverPort: 80, flowID: 1)
  request.method = "GET"
  try? store.write(requests: [TaggedRequest(request: request, tags: RecordTags())], source: source, ids: [:])
  let failure = #expect(throws: (any Error).self) { try store.finishSource(source) }
  #expect("\(failure.map { "\($0)" } ?? "")".contains("127.0.0.1:18123"))
  try store.execute("RENAME TABLE \(database).requests_away TO \(database).requests")
  let reopened = try kind.make("failing", directory: NSTemporaryDirectory())
  #expect(try reopened.beginSource(path: "failing.pcap", size: 1, modified: 1) == .read(id: source, restarted: true))
}

/// A ClickHouse user with a password (`make test`'s servers have `fathom`/`s3cret`, whose profile's
/// memory limit differs from `default`'s): credentials from the URL or ClickHouse's own
/// environment variables are used, a wrong password is an immediate clear error, and the
/// password never appears in a message.
@Test func clickHouseCredentialsAreSentAndNeverShown() throws {
  guard StoreKind.available.contains(.clickhouse) else { return }
  let database = StoreKind.clickhouse.database("credentials")
  defer { StoreKind.clickhouse.drop("credentials") }
  func memoryLimit(_ store: ClickHouseStore) throws -> String {
    try store.execute("SELECT value FROM system.settings WHERE name = 'max_memory_usage'")
      .trimmingCharacters(in: .whitespacesAndNewlines)
  }

  var fromURL = ClickHouseStore.Target(url: "http://fathom:s3cret@127.0.0.1:18123", environment: [:])
  #expect(fromURL.url == "http://127.0.0.1:18123")
  fromURL.database = database
  #expect(try memoryLimit(try ClickHouseStore(fromURL)) == "1999999999")

  var fromEnvironment = ClickHouseStore.Target(
    url: "http://127.0.0.1:18123", environment: ["CLICKHOUSE_USER": "fathom", "CLICKHOUSE_PASSWORD": "s3cret"])
  fromEnvironment.database = database
  #expect(try memoryLimit(try ClickHouseStore(fromEnvironment)) == "1999999999")

  var anonymous = ClickHouseStore.Target(url: "http://127.0.0.1:18123", environment: [:])
  anonymous.database = database
  #expect(try memoryLimit(try ClickHouseStore(anonymous)) == "2000000000")

  var wrong = ClickHouseStore.Target(url: "http://fathom:n0pe@127.0.0.1:18123", environment: [:])
  wrong.database = database
  let started = Date()
  let failure = #expect(throws: (any Error).self) { try ClickHouseStore(wrong) }
  let message = failure.map { "\($0)" } ?? ""
  #expect(message.contains("127.0.0.1:18123") && message.lowercased().contains("password"), "\(message)")
  #expect(!message.contains("n0pe"))
  #expect(Date().timeIntervalSince(started) < 1, "refused credentials are not retried")
}

/// ClickHouse behind TLS with a private CA that asks for a client certificate (a TLS proxy in
/// front of `make test`'s single node): records go in and are read back over https with the
/// CA and certificate given; without the CA, or without the client certificate, the store
/// refuses at once with the reason; insecure mode trusts any server.
@Test(.enabled(if: TLSTestProxy.toolsAvailable)) func clickHouseOverTLSWithAPrivateCA() throws {
  guard StoreKind.available.contains(.clickhouse) else { return }
  let proxy = try TLSTestProxy(backendPort: 18123, requireClientCertificate: true)
  defer { proxy.stop() }
  let database = StoreKind.clickhouse.database("tls")
  defer { StoreKind.clickhouse.drop("tls") }
  var target = ClickHouseStore.Target(url: proxy.url, environment: [:])
  target.database = database
  target.tls.certificateAuthorityPEM = try proxy.pem("ca.crt")
  target.tls.clientCertificatePEM = try proxy.pem("client.crt")
  target.tls.clientKeyPEM = try proxy.pem("client.key")

  let store = try ClickHouseStore(target)
  guard case .read(let source, _) = try store.beginSource(path: "tls.pcap", size: 1, modified: 1) else {
    Issue.record("new source not read")
    return
  }
  var requests: [TaggedRequest] = []
  for index in 0..<1_000 {
    var request = RequestLog(
      startMicros: Int64(index) * 1_000, endMicros: Int64(index) * 1_000 + 500, durationMicros: 500,
      applicationProtocol: .http, clientIP: IPAddress("10.244.1.6")!, clientPort: UInt16(40_000 + index),
      serverIP: IPAddress("10.244.2.3")!, serverPort: 8080, flowID: UInt64(index))
    request.method = "GET"
    request.resource = "/tls\t\(index)"  // escaped in the body: arrives whole
    requests.append(TaggedRequest(request: request, tags: RecordTags()))
  }
  try store.write(requests: requests, source: source, ids: [:])
  try store.finishSource(source)
  let stored = try store.execute(
    "SELECT count(), countIf(resource = '/tls\\t7') FROM \(database).requests WHERE source_id = \(source)")
  #expect(stored.trimmingCharacters(in: .whitespacesAndNewlines) == "1000\t1")

  var noAuthority = target
  noAuthority.tls.certificateAuthorityPEM = nil
  let started = Date()
  let unknownCA = #expect(throws: (any Error).self) { try ClickHouseStore(noAuthority) }
  #expect("\(unknownCA.map { "\($0)" } ?? "")".contains("certificate"), "\(String(describing: unknownCA))")
  #expect(Date().timeIntervalSince(started) < 1, "a refused certificate is not retried")

  var noClientCertificate = target
  noClientCertificate.tls.clientCertificatePEM = nil
  noClientCertificate.tls.clientKeyPEM = nil
  #expect(throws: (any Error).self) { try ClickHouseStore(noClientCertificate) }

  var insecure = noAuthority
  insecure.tls.insecureSkipVerify = true
  let count = try ClickHouseStore(insecure).execute("SELECT count() FROM \(database).requests")
  #expect(count.trimmingCharacters(in: .whitespacesAndNewlines) == "1000")
}

/// Every column of a flow, a request and their rollups is stored alike by SQLite and ClickHouse
/// (single node and cluster): the two writers are separate code (SQLite's statements, ClickHouse's
/// columns), so a value written into another column, or a column written in another order,
/// shows. Every field holds a value of its own; ids compare as the resources they name, request
/// and trace ids as the texts they encode.
@Test(arguments: StoreKind.available.filter { $0 != .sqlite })
func everyColumnIsStoredAlikeInBothStores(_ kind: StoreKind) throws {
  let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-alike-\(UUID().uuidString)")
    .path
  try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
  defer {
    try? FileManager.default.removeItem(atPath: directory)
    kind.drop("alike")
  }
  let resources = (1...12).map {
    Resource(
      id: Int32($0), kind: $0 % 3 == 0 ? .service : .pod, namespace: "ns\($0)", name: "r\($0)", labels: [:],
      detail: "", workload: "", validFromMicros: 0, validToMicros: 100_000_000)
  }
  var flow = FlowLog(
    startMicros: 5_000_011, endMicros: 5_900_013, l4Protocol: .tcp, clientIP: IPAddress("10.244.1.6")!,
    clientPort: 40_017, serverIP: IPAddress("fd00::19")!, serverPort: 8_023)
  flow.closeType = .serverReset
  flow.status = .serverError
  flow.clientToServer.packets = 29
  flow.clientToServer.l3Bytes = 31_000
  flow.serverToClient.packets = 37
  flow.serverToClient.l3Bytes = 41_000
  flow.clientToServer.retransmissions = 43
  flow.serverToClient.retransmissions = 47
  flow.clientToServer.zeroWindows = 53
  flow.serverToClient.zeroWindows = 59
  flow.synRetransmissions = 61
  flow.rttMicros = 67
  flow.srt.sumMicros = 71_000
  flow.srt.count = 73
  flow.applicationProtocol = .http
  flow.application.requests = 79
  flow.application.responses = 83
  flow.application.serverErrors = 89
  flow.application.clientErrors = 97
  var tags = RecordTags()
  tags.client = EndpointIdentity(kind: .pod, pod: 1, workload: 2, node: 4, service: 3, namespace: 5)
  tags.server = EndpointIdentity(kind: .service, pod: 7, workload: 8, node: 10, service: 6, namespace: 11)
  tags.observationPoint = .clientNode
  tags.captureNode = 10
  tags.interface = "eth7"
  tags.ingress = 9
  tags.answeredBy = 12
  tags.requestedService = 6
  var request = RequestLog(
    startMicros: 5_000_101, endMicros: 5_000_101 + 2_003, durationMicros: 2_003, applicationProtocol: .http,
    clientIP: flow.clientIP, clientPort: flow.clientPort, serverIP: flow.serverIP, serverPort: flow.serverPort,
    flowID: 7)
  request.method = "POST"
  request.domain = "shop.example"
  request.resource = "/cart?id=3"
  request.endpoint = "/cart"
  request.status = .clientError
  request.code = 404
  request.requestTCPSequence = 1_000_003
  request.responseTCPSequence = nil
  request.requestID = "0af7651916cd43dd8448eb211c80319c"
  request.responseRequestID = "not-hex-\u{1}"
  request.traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
  request.spanID = "00f067aa0ba902b7"
  request.requestBytes = 113
  request.responseBytes = 127
  let taggedFlow = TaggedFlow(flow: flow, tags: tags)
  let taggedRequest = TaggedRequest(request: request, tags: tags)

  // Both stores, the same records; per store, its own ids back to the resources they name.
  var stored: [[String: [String: String]]] = []
  for storeKind in [StoreKind.sqlite, kind] {
    let store = try storeKind.make("alike", directory: directory)
    let ids = try store.register(resources)
    let resourceOf = Dictionary(uniqueKeysWithValues: ids.map { (String(UInt64(bitPattern: $0.value)), "r\($0.key)") })
    guard case .read(let source, _) = try store.beginSource(path: "alike.pcap", size: 1, modified: 1) else {
      Issue.record("source not read")
      return
    }
    try store.write(flows: [taggedFlow][...], source: source, ids: ids)
    try store.write(requests: [taggedRequest][...], source: source, ids: ids)
    var rollups = RollupBuilder()
    rollups.add(taggedFlow)
    rollups.add(taggedRequest)
    try store.write(rollups: rollups, source: source, ids: ids)
    try store.finishSource(source)
    var tables: [String: [String: String]] = [:]
    for table in ["flows", "requests", "request_rollup_1s", "flow_rollup_1m"] {
      var row: [String: String] = [:]
      if let sqlite = store as? SQLiteStore {
        let result = try sqlite.query("SELECT * FROM \(table)")
        for (name, value) in zip(result.columns, result.rows.first ?? []) { row[name] = value }
      } else if let clickhouse = store as? ClickHouseStore {
        let database = clickhouse.target.database
        let names = try clickhouse.rows(
          "SELECT name FROM system.columns WHERE database = '\(database)' AND table = '\(table)'"
        ).map { $0[0] }
        let identifiers: Set = ["x_request_id_req", "x_request_id_resp", "trace_id", "span_id"]
        let select = names.map { identifiers.contains($0) ? "hex(\($0))" : "ifNull(toString(\($0)), 'NULL')" }
          .joined(separator: ", ")
        let values = try clickhouse.rows("SELECT \(select) FROM \(database).\(table)").first ?? []
        for (name, value) in zip(names, values) {
          row[name] = identifiers.contains(name) ? StoredIdentifier.decode(hex: value) : value
        }
      }
      #expect(!row.isEmpty, "\(storeKind) \(table): no row")
      // Ids as the resources they name (0: none); the source's id is each store's own.
      let idSuffixes = ["_pod", "_workload", "_node", "_service", "_namespace"]
      let idNames: Set = ["ingress", "answered_by", "requested_service"]
      for (name, value) in row where idNames.contains(name) || idSuffixes.contains(where: name.hasSuffix) {
        row[name] = value == "0" ? "none" : resourceOf[value] ?? "unknown id \(value)"
      }
      row["source_id"] = nil
      row["lookup_block"] = nil  // SQLite's own: the block of rows its lookup keys are filed under
      tables[table] = row
    }
    stored.append(tables)
  }
  for table in ["flows", "requests", "request_rollup_1s", "flow_rollup_1m"] {
    let (sqlite, clickhouse) = (stored[0][table] ?? [:], stored[1][table] ?? [:])
    let onlyOne = Set(sqlite.keys).symmetricDifference(clickhouse.keys)
    #expect(onlyOne.isEmpty, "\(table): columns in one store only: \(onlyOne.sorted())")
    for (name, value) in sqlite.sorted(by: { $0.key < $1.key }) {
      #expect(clickhouse[name] == value, "\(kind) \(table).\(name): \(clickhouse[name] ?? "missing"), SQLite \(value)")
    }
  }
}
