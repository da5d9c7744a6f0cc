import FathomKube
import FathomRecords
import Foundation
import GRDB
import Testing

@testable import FathomStore

/// Trace lookups in SQLite (schema v8): X-Request-ID and trace-id indexes lead with the block of
/// rows a request was written in, so a batch's random keys are inserted near each other; lookups
/// seek every block.
@Suite struct SQLiteLookupTests {
  let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-lookup-\(UUID().uuidString)")

  init() throws { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) }

  func request(start: Int64, requestID: String, traceID: String = "", sequence: UInt32? = nil) -> TaggedRequest {
    var request = RequestLog(
      startMicros: start, endMicros: start + 500, durationMicros: 500, applicationProtocol: .http,
      clientIP: IPAddress("10.0.0.1")!, clientPort: 40_000, serverIP: IPAddress("10.0.0.2")!, serverPort: 80,
      flowID: 1)
    request.requestID = requestID
    request.traceID = traceID
    request.requestTCPSequence = sequence
    var tags = RecordTags()
    tags.observationPoint = .server
    return TaggedRequest(request: request, tags: tags)
  }

  /// One request's records in different lookup blocks (and far apart in time) are all found by
  /// their IDs, and others' are not; by sequence number only within the window asked for.
  @Test func lookupsFindEveryBlock() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("lookup.sqlite").path
    let base: Int64 = 1_764_000_000_000_000
    let filler = (0..<SQLiteStore.lookupBlockRows).map { request(start: base + Int64($0), requestID: "f-\($0)") }
    do {
      let store = try SQLiteStore(path: path)
      guard case .read(let source, _) = try store.beginSource(path: "lookup", size: 1, modified: 1) else {
        Issue.record("source not read")
        return
      }
      // "a" in block 1 (with the filler that fills it), block 2, and block 3 after a reopen.
      try store.write(
        requests: [request(start: base, requestID: "a", traceID: "t-a", sequence: 7)][...], source: source, ids: [:])
      try store.write(requests: filler[...], source: source, ids: [:])
      try store.write(
        requests: [
          request(start: base + 5 * 60_000_000, requestID: "a", traceID: "t-a"),
          request(start: base + 60_000_000, requestID: "b"),
        ][...], source: source, ids: [:])
      try store.finishSource(source)
    }
    let store = try SQLiteStore(path: path)
    guard case .read(let source, _) = try store.beginSource(path: "more", size: 1, modified: 1) else {
      Issue.record("source not read")
      return
    }
    try store.write(
      requests: [request(start: base + 180 * 60_000_000, requestID: "a", traceID: "t-a")][...], source: source, ids: [:]
    )
    try store.write(requests: filler[...], source: source, ids: [:])
    try store.finishSource(source)
    let blocks = try store.query("SELECT DISTINCT lookup_block FROM requests WHERE x_request_id_req = 'a' ORDER BY 1")
      .rows
    #expect(blocks == [["1"], ["2"], ["3"]], "\(blocks)")
    #expect(
      try store.requests(xRequestID: "a").map(\.startMicros).sorted()
        == [0, 5 * 60_000_000, 180 * 60_000_000].map { base + $0 })
    #expect(try store.requests(xRequestID: "b").count == 1)
    #expect(try store.requests(xRequestID: "f-8000").count == 2)
    #expect(try store.requests(xRequestID: "c").isEmpty)
    #expect(try store.requests(traceID: "t-a").count == 3)
    #expect(try store.requests(requestSequence: 7, from: base - 60_000, to: base + 60_000).count == 1)
  }

  /// Each lookup is a search of its index, not a scan of the requests.
  @Test func lookupsSearchTheirIndexes() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try SQLiteStore(path: directory.appendingPathComponent("plan.sqlite").path)
    let blocks = TraceSQL.blocks.replacingOccurrences(of: "n < ?", with: "n < 2")
    let plans = [
      ("requests_x_request_id", "\(blocks) AND r.x_request_id_req = 'x' AND \(TraceSQL.hasRequestID)"),
      ("requests_x_request_id_resp", "\(blocks) AND r.x_request_id_resp = 'x' AND \(TraceSQL.hasOnlyResponseID)"),
      ("requests_trace_id", "\(blocks) AND r.trace_id = 't' AND \(TraceSQL.hasTraceID)"),
      ("requests_time", "r.start_us BETWEEN 0 AND 1000 AND r.req_tcp_seq = 7"),
    ]
    for (index, condition) in plans {
      let plan = try store.query("EXPLAIN QUERY PLAN SELECT r.rowid FROM requests r WHERE " + condition).rows.map {
        $0.joined(separator: " ")
      }.joined(separator: "\n")
      #expect(plan.contains("SEARCH r USING") && plan.contains("INDEX \(index) ("), "\(index): \(plan)")
      #expect(!plan.contains("SCAN r"), "\(index): \(plan)")
    }
    var connections = DiagnosisSQL.connectionsOfPort
    for value in ["110250000", "110250001", "40000", "1764000000000000", "1764000016000000", "'10.0.0.1'"] {
      connections = connections.replacingOccurrences(
        of: "?", with: value, range: connections.range(of: "?"))
    }
    let flowPlan = try store.query("EXPLAIN QUERY PLAN SELECT start_us FROM flows WHERE " + connections).rows.map {
      $0.joined(separator: " ")
    }.joined(separator: "\n")
    #expect(flowPlan.contains("SEARCH flows USING INDEX flows_client (<expr>=? AND client_port=?)"), "\(flowPlan)")
    // The last block of each index, read when a store opens and at each lookup: its index's end.
    for (index, _, rows) in TraceSQL.lookupIndexes {
      let plan = try store.query("EXPLAIN QUERY PLAN SELECT max(lookup_block) FROM requests WHERE \(rows)").rows.map {
        $0.joined(separator: " ")
      }.joined(separator: "\n")
      #expect(plan.contains("SEARCH requests USING") && plan.contains("INDEX \(index)"), "\(index): \(plan)")
    }
  }
  /// A file written by schema v7 (indexes on the key alone, one on sequence numbers) is migrated:
  /// its rows stay and are found through the new indexes.
  @Test func aVersion7FileIsMigrated() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("v7.sqlite").path
    do {
      let queue = try DatabaseQueue(path: path)
      try SQLiteStore.migrator.migrate(queue, upTo: "v7-partial-trace-indexes")
      try queue.write { db in
        try db.execute(
          sql: "INSERT INTO sources (id, path, size, modified, completed, started_at) VALUES (1, 'old', 1, 1, 1, 0)")
        let columns = try db.columns(in: "requests").map(\.name)
        let values = columns.map { column -> String in
          switch column {
          case "start_us": "1764000000000000"
          case "req_tcp_seq": "7"
          case "x_request_id_req": "'old-id'"
          case "trace_id": "'old-trace'"
          case "code", "resp_tcp_seq": "NULL"
          case "source_id": "1"
          default:
            [
              "protocol", "version", "client_ip", "server_ip", "interface", "observation_point", "client_kind",
              "server_kind", "method", "domain", "resource", "endpoint", "status", "x_request_id_resp", "span_id",
              "answers",
            ]
            .contains(column) ? "''" : "0"
          }
        }
        try db.execute(
          sql: "INSERT INTO requests (\(columns.joined(separator: ","))) VALUES (\(values.joined(separator: ",")))")
      }
    }
    let store = try SQLiteStore(path: path)
    #expect(try store.requests(xRequestID: "old-id").count == 1)
    #expect(try store.requests(traceID: "old-trace").count == 1)
    let indexes = try store.query("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requests'")
      .rows
    #expect(!indexes.contains { $0[0] == "requests_seq" })
    for name in ["requests_x_request_id", "requests_x_request_id_resp", "requests_trace_id"] {
      #expect(indexes.contains { $0[0] == name && $0[1].contains("(lookup_block, ") }, "\(name)")
    }
  }
}
