import FathomKube
import FathomRecords
import Foundation
import GRDB
import Testing

@testable import FathomStore

/// SQLite's ingest path: rows encoded by the caller, inserted many per statement by the store's
/// background writer.
@Suite struct SQLiteIngestTests {
  let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-rows-\(UUID().uuidString)")

  init() throws { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) }

  func requests(_ count: Int) -> [TaggedRequest] {
    (0..<count).map { index in
      var request = RequestLog(
        startMicros: Int64(index), endMicros: Int64(index) + 7, durationMicros: 7, applicationProtocol: .http,
        clientIP: IPAddress("10.0.0.1")!, clientPort: UInt16(index % 60_000), serverIP: IPAddress("10.0.0.2")!,
        serverPort: 80, flowID: UInt64(index))
      request.resource = "/item/\(index)"
      request.code = index % 2 == 0 ? 200 : nil
      // Values that repeat, alternate and change from one statement's rows to the next (a
      // parameter keeps its binding when its value is the same).
      request.method = index / 23 % 2 == 0 ? "GET" : "POST"
      request.domain = "shop"
      request.requestID = index % 3 == 0 ? "" : "id-\(index % 5)"
      var tags = RecordTags()
      tags.observationPoint = index % 7 == 0 ? .client : .server
      return TaggedRequest(request: request, tags: tags)
    }
  }

  /// SQLite inserts many rows per statement: counts that fill statements exactly, leave a
  /// remainder, or fit in one short statement all arrive whole, in order and with their values.
  @Test(arguments: [1, 22, 23, 24, 46, 1_000])
  func sqliteStoresEveryRowWhateverTheStatementBoundary(_ count: Int) throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try SQLiteStore(path: directory.appendingPathComponent("rows.sqlite").path)
    guard case .read(let source, _) = try store.beginSource(path: "rows", size: 1, modified: 1) else {
      Issue.record("source not read")
      return
    }
    try store.write(requests: requests(count)[...], source: source, ids: [:])
    let rows = try store.query(
      "SELECT start_us, resource, code, method, domain, x_request_id_req, observation_point FROM requests ORDER BY rowid"
    ).rows
    #expect(rows.count == count)
    for (index, row) in rows.enumerated() {
      let expected = [
        "\(index)", "/item/\(index)", index % 2 == 0 ? "200" : "NULL", index / 23 % 2 == 0 ? "GET" : "POST", "shop",
        index % 3 == 0 ? "" : "id-\(index % 5)", index % 7 == 0 ? "c" : "s",
      ]
      #expect(row == expected, "row \(index)")
      if row != expected { break }
    }
  }

  /// An insert that fails in the background (its table gone) is an error at the next call, and
  /// the source is not marked complete: never a silently missing batch.
  @Test func aFailedBackgroundInsertIsAnErrorNotAMissingBatch() throws {
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("failing.sqlite").path
    let store = try SQLiteStore(path: path)
    guard case .read(let source, _) = try store.beginSource(path: "failing", size: 1, modified: 1) else {
      Issue.record("source not read")
      return
    }
    try DatabaseQueue(path: path).write { try $0.execute(sql: "DROP TABLE requests") }
    try store.write(requests: requests(10)[...], source: source, ids: [:])
    #expect(throws: DatabaseError.self) { try store.finishSource(source) }
    #expect(throws: DatabaseError.self) { try store.write(requests: requests(1)[...], source: source, ids: [:]) }
    let completed = try DatabaseQueue(path: path).read {
      try Int.fetchOne($0, sql: "SELECT completed FROM sources WHERE id = ?", arguments: [source])
    }
    #expect(completed == 0)
  }
}

/// The WAL is copied back on a thread of its own while the writer goes on, and the writer
/// copies the rest at the limit so the WAL starts over.
@Suite struct SQLiteCheckpointTests {
  /// With small thresholds: background passes ran, the writer took its share at the limit,
  /// the WAL file never grew far past the limit (without the writer's share it would hold the
  /// whole database), and every row arrived intact.
  @Test func theWALIsCopiedBesideTheWriterAndStartsOver() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fathom-wal-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("wal.sqlite").path
    let batches = 30
    let perBatch = 2_000
    do {
      let store = try SQLiteStore(path: path, checkpointPassFrames: 4, checkpointLimitFrames: 24)
      guard case .read(let source, _) = try store.beginSource(path: "wal", size: 1, modified: 1) else {
        Issue.record("source not read")
        return
      }
      let requests = try SQLiteIngestTests().requests(perBatch)
      for _ in 0..<batches { try store.write(requests: requests[...], source: source, ids: [:]) }
      try store.finishSource(source)
      let counts = store.checkpointer.counts
      #expect(counts.passes > 0 && counts.writer > 0, "\(counts)")
      let wal = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int ?? 0
      let database = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
      #expect(database > 0 && wal * 3 < database, "WAL \(wal) bytes, database \(database) bytes")
      #expect(try store.query("SELECT count(*) FROM requests").rows == [["\(batches * perBatch)"]])
    }
    let check = try DatabaseQueue(path: path).read { try String.fetchOne($0, sql: "PRAGMA integrity_check") }
    #expect(check == "ok")
  }
}
