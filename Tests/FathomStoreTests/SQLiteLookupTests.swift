import FathomKube
import FathomRecords
import Foundation
import GRDB
import Testing

@testable import FathomStore

/// Trace lookups in SQLite (schema v8): X-Request-ID and trace-id indexes lead with the request's
/// minute, so random keys are inserted near each other; lookups seek every minute of the store.
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

  /// One request's records far apart in time (minutes, hours) are all found by its IDs, and
  /// others' are not; by sequence number only within the window asked for.
  @Test func lookupsFindEveryMinuteOfTheStore() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try SQLiteStore(path: directory.appendingPathComponent("lookup.sqlite").path)
    guard case .read(let source, _) = try store.beginSource(path: "lookup", size: 1, modified: 1) else {
      Issue.record("source not read")
      return
    }
    let minute: Int64 = 60_000_000
    let base: Int64 = 1_764_000_000_000_000
    var records: [TaggedRequest] = []
    for (offset, id) in [(Int64(0), "a"), (59_999_999, "a"), (minute, "b"), (5 * minute, "a"), (180 * minute, "a")] {
      records.append(request(start: base + offset, requestID: id, traceID: "t-\(id)", sequence: 7))
    }
    try store.write(requests: records[...], source: source, ids: [:])
    try store.finishSource(source)
    #expect(
      try store.requests(xRequestID: "a").map(\.startMicros).sorted()
        == [0, 59_999_999, 5 * minute, 180 * minute].map { base + $0 })
    #expect(try store.requests(xRequestID: "b").count == 1)
    #expect(try store.requests(xRequestID: "c").isEmpty)
    #expect(try store.requests(traceID: "t-a").count == 4)
    #expect(try store.requests(requestSequence: 7, from: base - 60_000, to: base + 60_000).count == 1)
  }

  /// Each lookup is a search of its index, not a scan of the requests.
  @Test func lookupsSearchTheirIndexes() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try SQLiteStore(path: directory.appendingPathComponent("plan.sqlite").path)
    let minutes = TraceSQL.minutes(from: 0, to: 120_000_000)
    let plans = [
      ("requests_x_request_id", "\(minutes.clause) AND r.x_request_id_req = 'x' AND \(TraceSQL.hasRequestID)"),
      (
        "requests_x_request_id_resp",
        "\(minutes.clause) AND r.x_request_id_resp = 'x' AND \(TraceSQL.hasOnlyResponseID)"
      ),
      ("requests_trace_id", "\(minutes.clause) AND r.trace_id = 't' AND \(TraceSQL.hasTraceID)"),
      ("requests_time", "r.start_us BETWEEN 0 AND 1000 AND r.req_tcp_seq = 7"),
    ]
    for (index, condition) in plans {
      let sql = "EXPLAIN QUERY PLAN SELECT r.rowid FROM requests r WHERE " + condition
      let bound = sql.replacingOccurrences(of: "SELECT ? UNION", with: "SELECT 0 UNION").replacingOccurrences(
        of: "m < ?", with: "m < 2")
      let plan = try store.query(bound).rows.map { $0.joined(separator: " ") }.joined(separator: "\n")
      #expect(plan.contains("SEARCH r USING INDEX \(index) ("), "\(index): \(plan)")
      #expect(!plan.contains("SCAN r"), "\(index): \(plan)")
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
      #expect(indexes.contains { $0[0] == name && $0[1].contains(TraceSQL.minuteOfStart) }, "\(name)")
    }
  }
}
