import FathomKube
import FathomRecords
import Foundation
import GRDB
import Testing

@testable import FathomStore

/// Trace lookups in SQLite (schema v10): X-Request-IDs and trace ids are hashed into bucket rows
/// of `request_keys` per lookup block (`RequestKeys`); lookups read the key's bucket in every
/// block, then the requests at the start times listed there, and compare the key itself.
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

  /// Each lookup is a search of an index, not a scan: the bucket per block, the requests by
  /// start time, the last block at the end of `request_keys_block`.
  @Test func lookupsSearchTheirIndexes() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try SQLiteStore(path: directory.appendingPathComponent("plan.sqlite").path)
    let blocks = TraceSQL.blocks.replacingOccurrences(of: "n < ?", with: "n < 2")
    let plans = [
      ("request_keys", "request_keys_block", "SELECT entries FROM request_keys WHERE \(blocks) AND bucket = 7"),
      ("r", "requests_time", "SELECT r.rowid FROM requests r WHERE r.start_us IN (1, 2) AND r.trace_id = 't'"),
      (
        "r", "requests_time", "SELECT r.rowid FROM requests r WHERE r.start_us BETWEEN 0 AND 1000 AND r.req_tcp_seq = 7"
      ),
      ("request_keys", "request_keys_block", TraceSQL.lastLookupBlock),
    ]
    for (table, index, query) in plans {
      let plan = try store.query("EXPLAIN QUERY PLAN " + query).rows.map {
        $0.joined(separator: " ")
      }.joined(separator: "\n")
      #expect(plan.contains("SEARCH \(table) USING") && plan.contains("INDEX \(index)"), "\(index): \(plan)")
      #expect(!plan.contains("SCAN \(table)"), "\(index): \(plan)")
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
  }

  /// The hash is stored in files: a change would leave every stored key unfindable.
  @Test func keyHashIsStable() {
    let id = "4bf92f3577b34da6a3ce929d0e0e4736"
    #expect(RequestKeys.hash(.requestID, id) == 0xb9ce_72be_f4eb_d3fb)
    #expect(RequestKeys.hash(.traceID, id) == 0xcb66_e022_0c3e_bd83)
    #expect(RequestKeys.bucket(RequestKeys.hash(.requestID, id)) == 185)
  }

  /// Keys that share a bucket (and a hash's entry) find only their own requests: the key itself
  /// is compared. A request's ID only in its response is found; a trace id is never found as an
  /// X-Request-ID.
  @Test func sharedBucketsFindOnlyTheirKey() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try SQLiteStore(path: directory.appendingPathComponent("buckets.sqlite").path)
    guard case .read(let source, _) = try store.beginSource(path: "b", size: 1, modified: 1) else {
      Issue.record("source not read")
      return
    }
    let base: Int64 = 1_764_000_000_000_000
    let first = "id-0"
    let bucket = RequestKeys.bucket(RequestKeys.hash(.requestID, first))
    let sameBucket = (1...).lazy.map { "id-\($0)" }.first {
      RequestKeys.bucket(RequestKeys.hash(.requestID, $0)) == bucket
    }!
    var onlyInResponse = request(start: base + 2, requestID: "")
    onlyInResponse.request.responseRequestID = "from-response"
    try store.write(
      requests: [
        request(start: base, requestID: first, traceID: sameBucket),
        request(start: base, requestID: sameBucket),  // the same start: only the key tells them apart
        onlyInResponse,
      ][...], source: source, ids: [:])
    try store.finishSource(source)
    #expect(try store.requests(xRequestID: first).map(\.xRequestID) == [first])
    #expect(try store.requests(xRequestID: sameBucket).map(\.xRequestID) == [sameBucket])
    #expect(try store.requests(traceID: sameBucket).map(\.xRequestID) == [first])
    #expect(try store.requests(xRequestID: "from-response").map(\.startMicros) == [base + 2])
    #expect(try store.requests(xRequestID: "").isEmpty)
  }

  /// A file made by schema v7 (indexes on the key alone, one on sequence numbers) holding one
  /// request ('old-id', trace 'old-trace') and `copies` more ('old-1' ... at later starts).
  func makeVersion7File(_ path: String, copies: Int = 0) throws {
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
      guard copies > 0 else { return }
      let copied = columns.map { column in
        switch column {
        case "start_us": "start_us + i"
        case "x_request_id_req": "'old-' || i"
        case "trace_id": "''"
        default: column
        }
      }
      try db.execute(
        sql: """
          WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(copies))
          INSERT INTO requests (\(columns.joined(separator: ","))) SELECT \(copied.joined(separator: ","))
          FROM requests, n WHERE requests.rowid = 1
          """)
    }
  }

  /// A file written by schema v7 is migrated: its rows stay, their keys are moved to
  /// `request_keys`, and the old indexes are gone.
  @Test func aVersion7FileIsMigrated() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("v7.sqlite").path
    try makeVersion7File(path)
    let store = try SQLiteStore(path: path)
    #expect(try store.requests(xRequestID: "old-id").count == 1)
    #expect(try store.requests(traceID: "old-trace").count == 1)
    let indexes = try store.query("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requests'")
      .rows
    for name in ["requests_seq", "requests_x_request_id", "requests_x_request_id_resp", "requests_trace_id"] {
      #expect(!indexes.contains { $0[0] == name }, "\(name)")
    }
    #expect(try store.query("SELECT lookup_block, bucket FROM request_keys ORDER BY bucket").rows.count == 2)
  }

  /// More requests than one row set holds, in one batch and in one migrated block (every row
  /// from before v8 is block 0): their keys go into several sets of bucket rows (a set has at
  /// most one row per bucket), and keys from each set are found.
  @Test func manyRequestsSpanRowSets() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let count = RequestKeys.requestsPerRowSet + 3_000
    let path = directory.appendingPathComponent("sets.sqlite").path
    try makeVersion7File(path, copies: count)
    let store = try SQLiteStore(path: path)
    guard case .read(let source, _) = try store.beginSource(path: "new", size: 1, modified: 1) else {
      Issue.record("source not read")
      return
    }
    let base: Int64 = 1_765_000_000_000_000
    try store.write(
      requests: (0..<count).map { request(start: base + Int64($0), requestID: "new-\($0)") }[...], source: source,
      ids: [:])
    try store.finishSource(source)
    let rowsByBlock = try store.query("SELECT lookup_block, count(*) FROM request_keys GROUP BY 1 ORDER BY 1").rows
    #expect(rowsByBlock.count == 2, "\(rowsByBlock)")
    #expect(rowsByBlock.allSatisfy { (Int($0[1]) ?? 0) > RequestKeys.buckets }, "\(rowsByBlock)")
    for id in ["old-id", "old-1", "old-\(RequestKeys.requestsPerRowSet + 1)", "old-\(count)"] {
      #expect(try store.requests(xRequestID: id).count == 1, "\(id)")
    }
    for n in [0, RequestKeys.requestsPerRowSet, count - 1] {
      #expect(try store.requests(xRequestID: "new-\(n)").map(\.startMicros) == [base + Int64(n)])
    }
  }
}
