import FathomKube
import FathomRecords
import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// Rows for one table, encoded on the caller's thread and inserted later by `insert` (on the
/// store's writer thread). Values wait in an array; run-time texts (and addresses, written
/// without a String) are copied into an arena and bound without SQLite copying them again;
/// literals are bound from their static storage. Binding straight into statements avoids GRDB's
/// per-value boxing (StatementArguments), which cost more than SQLite itself.
final class RowBlock: @unchecked Sendable {
  private enum Value {
    case int(Int64)
    case null
    /// Bytes in the arena (which may move while it grows: bound as a range).
    case arena(offset: Int, count: Int)
    /// Bytes in the arena, bound as a blob.
    case blob(offset: Int, count: Int)
    /// A static string's bytes: they live as long as the program.
    case literal(UnsafePointer<UInt8>, count: Int)
    /// The value its parameter holds from the statement's previous step (`markRepeats`).
    case repeated
  }

  /// `INSERT OR FAIL INTO table[ (columns)]`.
  let table: String
  let columns: Int
  private var values: [Value] = []
  private var arena = OutputBuffer(capacity: 1 << 16)

  init(table: String, columns: Int, rows: Int) {
    self.table = table
    self.columns = columns
    values.reserveCapacity(rows * columns)
  }

  var rows: Int { values.count / columns }

  func int(_ value: Int64) { values.append(.int(value)) }

  func int(_ value: Int) { values.append(.int(Int64(value))) }

  func optional(_ value: Int64?) { values.append(value.map { .int($0) } ?? .null) }

  func text(_ value: String) {
    let start = arena.count
    arena.append(string: value)
    values.append(.arena(offset: start, count: arena.count - start))
  }

  /// A text field of a request record, copied from its buffer without making a String.
  func text(_ texts: RequestTexts, _ field: RequestTexts.Field) {
    let start = arena.count
    texts.withUTF8(field) { arena.append(bytes: $0) }
    values.append(.arena(offset: start, count: arena.count - start))
  }

  func text(_ value: StaticString) {
    if value.hasPointerRepresentation {
      values.append(.literal(value.utf8Start, count: value.utf8CodeUnitCount))
    } else {
      text(value.description)
    }
  }

  func text(_ address: IPAddress) {
    let start = arena.count
    arena.append(address)
    values.append(.arena(offset: start, count: arena.count - start))
  }

  /// A text column written straight into the arena by `write`.
  func text(writing write: (inout OutputBuffer) -> Void) {
    let start = arena.count
    write(&arena)
    values.append(.arena(offset: start, count: arena.count - start))
  }

  /// A blob column written straight into the arena by `write`.
  func blob(writing write: (inout OutputBuffer) -> Void) {
    let start = arena.count
    write(&arena)
    values.append(.blob(offset: start, count: arena.count - start))
  }

  /// Checks that a row bound one value per column (a mistake here would shift every later row).
  func endRow() {
    precondition(values.count % columns == 0, "a row of \(table) bound a wrong number of values")
  }

  /// 1,000 parameters per statement (SQLite takes up to 32,766): the gain levels off well before.
  var rowsPerStatement: Int { max(1, 1_000 / columns) }

  /// Inserts the rows, many per statement (`INSERT ... VALUES (...), (...)`): SQLite opens the
  /// table's and every index's cursors once per statement, and with one row per statement that
  /// opening cost more than the inserts. `OR FAIL`: a failing row fails the batch's whole
  /// transaction anyway, and without it SQLite keeps a statement journal (a temporary file) to
  /// undo one statement's earlier rows — 1.7 GB of writes for a million records.
  func insert(_ db: Database) throws {
    let perStatement = rowsPerStatement
    let full = rows / perStatement
    if full > 0 {
      let statement = try Self.statement(db, table, columns: columns, rows: perStatement)
      for set in 0..<full { try execute(db, statement, firstValue: set * perStatement * columns) }
    }
    if rows % perStatement > 0 {
      let statement = try Self.statement(db, table, columns: columns, rows: rows % perStatement)
      try execute(db, statement, firstValue: full * perStatement * columns)
    }
  }

  /// Marks each value equal to the one its parameter holds from the statement's previous step
  /// (the same position in the set of rows before; a statement's parameters keep their values
  /// through `sqlite3_reset`), so `insert` does not bind it again: records repeat most columns
  /// row to row (the source, kinds, zero ids, empty texts), and a bind cost as much as SQLite's
  /// step per column. Called on the caller's thread, before the block is queued, to leave the
  /// comparing off the writer's. Only full sets after the first are marked, as `insert` steps
  /// them with one statement (a short last set gets a statement of its own).
  func markRepeats() {
    let stride = rowsPerStatement * columns
    let end = rows / rowsPerStatement * stride
    guard end > stride else { return }
    arena.withUnsafeBytes { bytes in
      let base = bytes.baseAddress!.assumingMemoryBound(to: CChar.self)
      values.withUnsafeMutableBufferPointer { values in
        // Backwards: each value is compared with one before it, not yet marked.
        for index in Swift.stride(from: end - 1, through: stride, by: -1)
        where Self.same(values[index], values[index - stride], base) {
          values[index] = .repeated
        }
      }
    }
  }

  @inline(__always) private static func same(_ value: Value, _ bound: Value, _ arena: UnsafePointer<CChar>) -> Bool {
    switch (value, bound) {
    case (.int(let a), .int(let b)): a == b
    case (.null, .null): true
    case (.literal(let a, let aCount), .literal(let b, let bCount)): a == b && aCount == bCount
    case (.arena(let a, let aCount), .arena(let b, let bCount)), (.blob(let a, let aCount), .blob(let b, let bCount)):
      aCount == bCount && (aCount == 0 || memcmp(arena + a, arena + b, aCount) == 0)
    default: false
    }
  }

  private static func statement(_ db: Database, _ table: String, columns: Int, rows: Int) throws -> Statement {
    let row = "(" + Array(repeating: "?", count: columns).joined(separator: ",") + ")"
    return try db.makeStatement(
      sql: "INSERT OR FAIL INTO \(table) VALUES " + Array(repeating: row, count: rows).joined(separator: ","))
  }

  /// Binds the rows from `firstValue` on, except the values `markRepeats` marked, and steps.
  private func execute(_ db: Database, _ owner: Statement, firstValue: Int) throws {
    let statement = owner.sqliteStatement
    let count = Int(sqlite3_bind_parameter_count(statement))
    arena.withUnsafeBytes { bytes in
      let base = bytes.baseAddress!.assumingMemoryBound(to: CChar.self)
      values.withUnsafeBufferPointer { values in
        for parameter in 1...count {
          // SQLITE_STATIC (nil) for texts: the arena outlives the step below (and a kept binding
          // points at equal bytes earlier in it).
          switch values[firstValue + parameter - 1] {
          case .repeated: continue
          case .int(let value): sqlite3_bind_int64(statement, Int32(parameter), value)
          case .null: sqlite3_bind_null(statement, Int32(parameter))
          case .arena(let offset, let count):
            sqlite3_bind_text(statement, Int32(parameter), base + offset, Int32(count), nil)
          case .blob(let offset, let count):
            sqlite3_bind_blob(statement, Int32(parameter), base + offset, Int32(count), nil)
          case .literal(let start, let count):
            start.withMemoryRebound(to: CChar.self, capacity: count) {
              _ = sqlite3_bind_text(statement, Int32(parameter), $0, Int32(count), nil)
            }
          }
        }
      }
    }
    let result = sqlite3_step(statement)
    sqlite3_reset(statement)
    guard result == SQLITE_DONE else {
      throw DatabaseError(
        resultCode: ResultCode(rawValue: result), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
    }
  }
}

/// Record ids (the tagger's) to dictionary-table ids (the store's) by array index: the ingest
/// path looks up eight per record, and hashing them cost more than the rest of the binding.
struct StoreIDs {
  private let table: [Int64]
  private let overflow: [Int32: Int64]

  init(_ ids: [Int32: Int64]) {
    let dense = ids.keys.filter { $0 > 0 && $0 < 1 << 20 }
    var table = [Int64](repeating: 0, count: Int(dense.max() ?? 0) + 1)
    for key in dense { table[Int(key)] = ids[key]! }
    self.table = table
    overflow = ids.filter { $0.key <= 0 || $0.key >= 1 << 20 }
  }

  /// 0 for "none" and for an id the store never registered.
  @inline(__always) subscript(_ value: Int32) -> Int64 {
    if value > 0 && Int(value) < table.count { return table[Int(value)] }
    return value == 0 ? 0 : overflow[value] ?? 0
  }
}

/// The embedded default: one SQLite file in WAL mode through GRDB, versioned migrations,
/// one transaction per batch (a killed run leaves a consistent file).
public final class SQLiteStore: RecordStore {
  private let database: DatabasePool
  /// Record and rollup inserts, one transaction each, run in the background while the caller
  /// encodes the next batch and builds its rollups (`write(requests:)`, `write(flows:)`,
  /// `write(rollups:)` return once their rows are encoded).
  private let writes = OrderedWorker(name: "fathom-sqlite-writer")
  public let path: String
  let checkpointer: WALCheckpointer
  /// The lookup block the next requests are filed under, and how many rows it holds so far.
  private let lookupBlock: Mutex<(number: Int64, rows: Int)>
  /// Rows per lookup block: a batch's random keys share a block's few index pages, and a lookup
  /// seeks once per block (a batch of more rows gets a block of its own: 1,000 seeks in
  /// store-bench's 10M-record store of 10,000-record batches).
  static let lookupBlockRows = 8_192

  /// The database once every queued insert is stored: reads and other writes see them.
  var pool: DatabasePool {
    get throws {
      try writes.flush()
      return database
    }
  }

  public convenience init(path: String) throws {
    try self.init(path: path, checkpointPassFrames: 1024, checkpointLimitFrames: 8192)
  }

  /// `checkpointPassFrames`, `checkpointLimitFrames`: see `WALCheckpointer` (tests make them
  /// small).
  init(path: String, checkpointPassFrames: Int32, checkpointLimitFrames: Int32) throws {
    self.path = path
    let checkpointer = WALCheckpointer(
      path: path, passFrames: checkpointPassFrames, limitFrames: checkpointLimitFrames)
    self.checkpointer = checkpointer
    var configuration = Configuration()
    configuration.prepareDatabase { db in
      // 32 KiB pages for a new file (before WAL mode is set; an existing file keeps its size):
      // fewer page splits and WAL frames per record. store-bench, interleaved runs: 16 KiB
      // 307k-335k records/s, 32 KiB 313k-355k, 64 KiB no better; 4 KiB was 15% below 16 KiB.
      try db.execute(sql: "PRAGMA page_size = 32768")
      try db.execute(sql: "PRAGMA synchronous = NORMAL")
      // A 64 MiB page cache keeps the indexes' hot pages in memory during ingest.
      try db.execute(sql: "PRAGMA cache_size = -65536")
      // Checkpoints on a thread of their own instead of in the writer's commits.
      if !db.configuration.readonly, let connection = db.sqliteConnection { checkpointer.install(on: connection) }
      // Readers go through a memory map instead of a pread per page: the runbook's scan of a
      // 10-minute recording made 90k preads. Not the writer: an ingest touches the index pages
      // of the whole file, which a map would keep resident for the length of the run.
      if db.configuration.readonly { try db.execute(sql: "PRAGMA mmap_size = 4294967296") }
    }
    database = try DatabasePool(path: path, configuration: configuration)
    try Self.migrator.migrate(database)
    let last = try database.read { db in try Int64.fetchOne(db, sql: TraceSQL.lastLookupBlock) }
    lookupBlock = Mutex((number: (last ?? 0) + 1, rows: 0))
  }

  deinit {
    do {
      try writes.flush()
    } catch {
      FileHandle.standardError.write(Data("fathom: records not stored in \(path): \(error)\n".utf8))
    }
    writes.stop()
    database.writeWithoutTransaction { db in
      if let connection = db.sqliteConnection { checkpointer.uninstall(from: connection) }
    }
    checkpointer.stop()
  }

  /// Schema versions; a file from an older version is migrated, never dropped.
  static var migrator: DatabaseMigrator {
    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1") { db in
      try db.execute(
        sql: """
          CREATE TABLE sources (
            id INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL, modified INTEGER NOT NULL,
            completed INTEGER NOT NULL DEFAULT 0, started_at INTEGER NOT NULL);
          CREATE TABLE resources (
            id INTEGER PRIMARY KEY, kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
            labels TEXT NOT NULL, detail TEXT NOT NULL, workload TEXT NOT NULL,
            valid_from INTEGER NOT NULL, valid_to INTEGER NOT NULL, UNIQUE (kind, namespace, name));
          CREATE TABLE flows (
            source_id INTEGER NOT NULL, start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, protocol TEXT NOT NULL,
            client_ip TEXT NOT NULL, client_port INTEGER NOT NULL, server_ip TEXT NOT NULL, server_port INTEGER NOT NULL,
            capture_node INTEGER NOT NULL, interface TEXT NOT NULL, observation_point TEXT NOT NULL,
            client_kind TEXT NOT NULL, client_pod INTEGER NOT NULL, client_workload INTEGER NOT NULL,
            client_node INTEGER NOT NULL, client_service INTEGER NOT NULL, client_namespace INTEGER NOT NULL,
            server_kind TEXT NOT NULL, server_pod INTEGER NOT NULL, server_workload INTEGER NOT NULL,
            server_node INTEGER NOT NULL, server_service INTEGER NOT NULL, server_namespace INTEGER NOT NULL,
            answered_by INTEGER NOT NULL, requested_service INTEGER NOT NULL,
            close_type TEXT NOT NULL, status TEXT NOT NULL,
            c2s_packets INTEGER NOT NULL, c2s_bytes INTEGER NOT NULL, s2c_packets INTEGER NOT NULL,
            s2c_bytes INTEGER NOT NULL, retransmissions INTEGER NOT NULL, zero_windows INTEGER NOT NULL,
            syn_retransmissions INTEGER NOT NULL, rtt_us INTEGER NOT NULL, srt_sum_us INTEGER NOT NULL,
            srt_count INTEGER NOT NULL, app_protocol TEXT NOT NULL, requests INTEGER NOT NULL,
            responses INTEGER NOT NULL, server_errors INTEGER NOT NULL, client_errors INTEGER NOT NULL);
          CREATE INDEX flows_time ON flows (start_us);
          CREATE TABLE requests (
            source_id INTEGER NOT NULL, start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
            duration_us INTEGER NOT NULL, protocol TEXT NOT NULL, version TEXT NOT NULL,
            client_ip TEXT NOT NULL, client_port INTEGER NOT NULL, server_ip TEXT NOT NULL, server_port INTEGER NOT NULL,
            capture_node INTEGER NOT NULL, interface TEXT NOT NULL, observation_point TEXT NOT NULL,
            client_kind TEXT NOT NULL, client_pod INTEGER NOT NULL, client_workload INTEGER NOT NULL,
            client_node INTEGER NOT NULL, client_service INTEGER NOT NULL, client_namespace INTEGER NOT NULL,
            server_kind TEXT NOT NULL, server_pod INTEGER NOT NULL, server_workload INTEGER NOT NULL,
            server_node INTEGER NOT NULL, server_service INTEGER NOT NULL, server_namespace INTEGER NOT NULL,
            ingress INTEGER NOT NULL, answered_by INTEGER NOT NULL, requested_service INTEGER NOT NULL,
            method TEXT NOT NULL, domain TEXT NOT NULL, resource TEXT NOT NULL, endpoint TEXT NOT NULL,
            status TEXT NOT NULL, code INTEGER, req_tcp_seq INTEGER, resp_tcp_seq INTEGER,
            x_request_id_req TEXT NOT NULL, x_request_id_resp TEXT NOT NULL, trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL, req_bytes INTEGER NOT NULL, resp_bytes INTEGER NOT NULL, answers TEXT NOT NULL);
          CREATE INDEX requests_time ON requests (start_us);
          CREATE INDEX requests_server ON requests (server_service, observation_point);
          CREATE INDEX requests_x_request_id ON requests (x_request_id_req);
          """)
    }
    migrator.registerMigration("v2-rollups") { db in
      for resolution in RollupBuilder.resolutions {
        let requests = RollupSchema.table("request", resolution)
        let flows = RollupSchema.table("flow", resolution)
        try db.execute(
          sql: """
            CREATE TABLE \(requests) (source_id INTEGER NOT NULL, interval_start INTEGER NOT NULL,
              client_pod INTEGER NOT NULL, client_service INTEGER NOT NULL, server_pod INTEGER NOT NULL,
              server_service INTEGER NOT NULL, protocol TEXT NOT NULL, observation_point TEXT NOT NULL,
              endpoint TEXT NOT NULL, requests INTEGER NOT NULL, responses INTEGER NOT NULL,
              client_errors INTEGER NOT NULL, server_errors INTEGER NOT NULL, timeouts INTEGER NOT NULL,
              latency_sum_us INTEGER NOT NULL, latency_max_us INTEGER NOT NULL, histogram TEXT NOT NULL);
            CREATE INDEX \(requests)_service ON \(requests) (server_service, observation_point, interval_start);
            CREATE TABLE \(flows) (source_id INTEGER NOT NULL, interval_start INTEGER NOT NULL,
              client_pod INTEGER NOT NULL, server_pod INTEGER NOT NULL, server_service INTEGER NOT NULL,
              observation_point TEXT NOT NULL, protocol TEXT NOT NULL, bytes INTEGER NOT NULL, packets INTEGER NOT NULL,
              new_flows INTEGER NOT NULL, closed_flows INTEGER NOT NULL, retransmissions INTEGER NOT NULL,
              zero_windows INTEGER NOT NULL, rtt_sum_us INTEGER NOT NULL, rtt_count INTEGER NOT NULL,
              rtt_max_us INTEGER NOT NULL, establish_failures INTEGER NOT NULL, resets INTEGER NOT NULL);
            CREATE INDEX \(flows)_service ON \(flows) (server_service, interval_start);
            """)
      }
    }
    // The services summary and RED read the rollups; this index only slowed ingest (~15%).
    migrator.registerMigration("v3-drop-requests-server-index") { db in
      try db.execute(sql: "DROP INDEX IF EXISTS requests_server")
    }
    // Trace assembly looks requests up by sequence number and response X-Request-ID.
    migrator.registerMigration("v4-trace-indexes") { db in
      try db.execute(sql: "CREATE INDEX requests_seq ON requests (req_tcp_seq)")
      try db.execute(sql: "CREATE INDEX requests_x_request_id_resp ON requests (x_request_id_resp)")
    }
    // ... and a request's connection (the handshake it waited for) by client port and time.
    migrator.registerMigration("v5-flow-client-index") { db in
      try db.execute(sql: "CREATE INDEX flows_client ON flows (client_port, start_us)")
    }
    // The runbook reads the clients' DNS lookups and the servers' HTTP answers over a window: by
    // time alone SQLite read every request of the window (0.25 s for the DNS lookups of a
    // 10-minute lab recording). Partial indexes hold only those rows (a quarter of a lab
    // recording's): one index over every request by (protocol, point, time) cost 14% of ingest.
    migrator.registerMigration("v6-runbook-partial-indexes") { db in
      for (name, protocolName, point) in [("requests_dns_clients", "dns", "c"), ("requests_http_servers", "http", "s")]
      {
        try db.execute(
          sql: "CREATE INDEX \(name) ON requests (start_us) WHERE \(DiagnosisSQL.requestsOf(protocolName, at: point))")
      }
    }
    // Lookup keys are indexed only where a record has one: an empty X-Request-ID or a missing
    // sequence number is never looked up, and half of a lab recording's requests (DNS, Redis)
    // carry no ID. The trace-id lookup, a full scan before, gets its index the same way.
    migrator.registerMigration("v7-partial-trace-indexes") { db in
      for name in ["requests_x_request_id", "requests_x_request_id_resp", "requests_seq"] {
        try db.execute(sql: "DROP INDEX IF EXISTS \(name)")
      }
      try db.execute(
        sql: "CREATE INDEX requests_x_request_id ON requests (x_request_id_req) WHERE \(TraceSQL.hasRequestID)")
      try db.execute(
        sql:
          "CREATE INDEX requests_x_request_id_resp ON requests (x_request_id_resp) WHERE \(TraceSQL.hasOnlyResponseID)"
      )
      try db.execute(sql: "CREATE INDEX requests_seq ON requests (req_tcp_seq) WHERE \(TraceSQL.hasSequence)")
      try db.execute(sql: "CREATE INDEX requests_trace_id ON requests (trace_id) WHERE \(TraceSQL.hasTraceID)")
    }
    // Lookup keys are random (nginx's request ids, trace ids), so an index on the key alone took
    // every batch's inserts at pages all over it: with random X-Request-IDs a million records
    // wrote gigabytes of WAL and ingest fell from ~290k to 52k records/s. Led by the block of
    // rows a request was written in (`lookup_block`, a new one every `lookupBlockRows` rows), a
    // batch's keys land in the few pages of its own block; lookups seek the key once per block.
    // Rows from before keep block 0. Sequence numbers are looked up only within ±60 ms of a
    // request, which the time index finds: their index is dropped.
    migrator.registerMigration("v8-block-led-lookup-indexes") { db in
      try db.execute(sql: "ALTER TABLE requests ADD COLUMN lookup_block INTEGER NOT NULL DEFAULT 0")
      try db.execute(sql: "DROP INDEX IF EXISTS requests_seq")
      for (name, column, condition) in TraceSQL.lookupIndexes {
        try db.execute(sql: "DROP INDEX IF EXISTS \(name)")
        try db.execute(sql: "CREATE INDEX \(name) ON requests (lookup_block, \(column)) WHERE \(condition)")
      }
    }
    // Client ports are random too: led by the port, every batch of flows dirtied pages all over
    // the index (1M flows in 10,000-row transactions: 3.3 s for this index against 0.65 s led by
    // a 16 s bucket of the start). The handshake lookup asks within 16 s: two buckets.
    migrator.registerMigration("v9-flows-client-index-by-time-bucket") { db in
      try db.execute(sql: "DROP INDEX IF EXISTS flows_client")
      try db.execute(sql: "CREATE INDEX flows_client ON flows (\(DiagnosisSQL.connectBucket), client_port)")
    }
    // Even led by the block, the lookup indexes cost SQLite ~1 µs a key (a search of record
    // comparisons down the tree for each), 1.7 s of the writer's 4 s per million store-bench
    // records: keys go to hashed bucket rows instead (`RequestKeys`), a few hundred rows a batch.
    // The keys already stored are moved there, grouped by their rows' lookup block.
    migrator.registerMigration("v10-request-keys") { db in
      try db.execute(
        sql: """
          CREATE TABLE request_keys (lookup_block INTEGER NOT NULL, bucket INTEGER NOT NULL, entries BLOB NOT NULL);
          CREATE INDEX request_keys_block ON request_keys (lookup_block, bucket);
          """)
      // A batch per lookup block and row set: rows from before v8 (all block 0) may be millions.
      var keys = RequestKeys.Batch(block: 0, requests: RequestKeys.requestsPerRowSet)
      var block: Int64 = 0
      let stored = try Row.fetchCursor(
        db,
        sql: """
          SELECT lookup_block, start_us, x_request_id_req, x_request_id_resp, trace_id FROM requests
          WHERE x_request_id_req != '' OR x_request_id_resp != '' OR trace_id != '' ORDER BY lookup_block, rowid
          """)
      while let row = try stored.next() {
        let rowBlock: Int64 = row[0]
        if rowBlock != block || keys.requests == RequestKeys.requestsPerRowSet {
          try keys.finish().insert(db)
          keys = RequestKeys.Batch(block: rowBlock, requests: RequestKeys.requestsPerRowSet)
          block = rowBlock
        }
        var (requestID, responseRequestID, traceID): (String, String, String) = (row[2], row[3], row[4])
        requestID.withUTF8 { requestID in
          responseRequestID.withUTF8 { responseRequestID in
            traceID.withUTF8 { traceID in
              keys.add(
                requestID: UnsafeRawBufferPointer(requestID),
                responseRequestID: UnsafeRawBufferPointer(responseRequestID),
                traceID: UnsafeRawBufferPointer(traceID), start: row[1])
            }
          }
        }
      }
      try keys.finish().insert(db)
      for (name, _, _) in TraceSQL.lookupIndexes { try db.execute(sql: "DROP INDEX IF EXISTS \(name)") }
    }
    return migrator
  }

  /// Rollup rows are queued in blocks of at most `rollupRowsPerTransaction` as they are made, so
  /// the writer inserts one block while this thread makes the next (the last write of a run holds
  /// every interval still open: a third of a million 1 s rows per million store-bench records).
  /// Several transactions are safe: a source is complete only after `finishSource`, and a killed
  /// run's rows of an incomplete source, rollups included, are deleted when it is read again.
  public func write(rollups: RollupBuilder, source: Int64, ids: [Int32: Int64]) throws {
    let id = StoreIDs(ids)
    for resolution in RollupBuilder.resolutions {
      let requestColumns = RollupSchema.requestKey + RollupSchema.requestValues
      let requestRollups = rollups.requestRollups(resolution)
      // In the order of the table's index (Service, observation point, interval): the index
      // grows in runs instead of at random places. Positions are sorted, not the rows.
      // The sort keys are copied out first: a comparator reading the table's arrays retained
      // them at every comparison.
      let order = requestRollups.keys.enumerated().map {
        (service: $1.serverService, point: $1.observationPoint, interval: $1.intervalStart, position: $0)
      }.sorted { ($0.service, $0.point, $0.interval) < ($1.service, $1.point, $1.interval) }
      let endpoints = rollups.endpoints
      try requestRollups.keys.withUnsafeBufferPointer { keys in
        try requestRollups.values.withUnsafeBufferPointer { values in
          try insertInBlocks(
            order, table: "\(RollupSchema.table("request", resolution)) (\(requestColumns.joined(separator: ",")))",
            columns: requestColumns.count
          ) { entry, requestRow in
            let key = keys[entry.position]
            // A pointer, not a copy: every copy of a rollup retained its histogram.
            let value = values.baseAddress! + entry.position
            requestRow.int(source)
            requestRow.int(key.intervalStart)
            requestRow.int(id[key.clientPod])
            requestRow.int(id[key.clientService])
            requestRow.int(id[key.serverPod])
            requestRow.int(id[key.serverService])
            requestRow.text((ApplicationProtocol(rawValue: key.protocolCode) ?? .http).name)
            requestRow.text(RollupBuilder.point(key.observationPoint).rawValue)
            requestRow.text(endpoints[Int(key.endpoint)])
            requestRow.int(Int64(value.pointee.requests))
            requestRow.int(Int64(value.pointee.responses))
            requestRow.int(Int64(value.pointee.clientErrors))
            requestRow.int(Int64(value.pointee.serverErrors))
            requestRow.int(Int64(value.pointee.timeouts))
            requestRow.int(value.pointee.latencySum)
            requestRow.int(value.pointee.latencyMax)
            requestRow.text { value.pointee.histogram.appendEncoded(to: &$0) }
          }
        }
      }
      let flowColumns = RollupSchema.flowKey + RollupSchema.flowValues
      let flowRollups = rollups.flowRollups(resolution)
      try insertInBlocks(
        flowRollups, table: "\(RollupSchema.table("flow", resolution)) (\(flowColumns.joined(separator: ",")))",
        columns: flowColumns.count
      ) { rollup, flowRow in
        let (key, value) = rollup
        flowRow.int(source)
        flowRow.int(key.intervalStart)
        flowRow.int(id[key.clientPod])
        flowRow.int(id[key.serverPod])
        flowRow.int(id[key.serverService])
        flowRow.text(RollupBuilder.point(key.observationPoint).rawValue)
        flowRow.text((L4Protocol(rawValue: key.l4Protocol) ?? .tcp).name)
        for counter in [
          value.bytes, value.packets, value.newFlows, value.closedFlows, value.retransmissions, value.zeroWindows,
          value.rttSum, value.rttCount, value.rttMax, value.establishFailures, value.resets,
        ] {
          flowRow.int(Int64(counter))
        }
      }
    }
  }

  /// As many rows as a batch of records gets.
  static let rollupRowsPerTransaction = 10_000

  /// One row per element written by `row`, queued a block of `rollupRowsPerTransaction` at a time.
  private func insertInBlocks<Rows: Sequence>(
    _ elements: Rows, table: String, columns: Int, row: (Rows.Element, RowBlock) -> Void
  ) throws {
    let perBlock = Self.rollupRowsPerTransaction
    var block = RowBlock(table: table, columns: columns, rows: Swift.min(perBlock, elements.underestimatedCount))
    for element in elements {
      row(element, block)
      block.endRow()
      if block.rows == perBlock {
        try insert(block)
        block = RowBlock(table: table, columns: columns, rows: perBlock)
      }
    }
    if block.rows > 0 { try insert(block) }
  }

  /// Queues blocks of rows as one transaction.
  private func insert(_ blocks: RowBlock...) throws {
    for block in blocks { block.markRepeats() }
    try writes.enqueue { [database] in try database.write { db in for block in blocks { try block.insert(db) } } }
  }

  public func beginSource(path: String, size: Int64, modified: Int64) throws -> SourceStart {
    try pool.write { db in
      if let row = try Row.fetchOne(
        db, sql: "SELECT id, completed FROM sources WHERE path = ? AND size = ? AND modified = ?",
        arguments: [path, size, modified])
      {
        let id: Int64 = row["id"]
        let completed: Bool = row["completed"]
        if completed { return .skip }
        try db.execute(sql: "DELETE FROM flows WHERE source_id = ?", arguments: [id])
        try db.execute(sql: "DELETE FROM requests WHERE source_id = ?", arguments: [id])
        for resolution in RollupBuilder.resolutions {
          for kind in ["request", "flow"] {
            try db.execute(
              sql: "DELETE FROM \(RollupSchema.table(kind, resolution)) WHERE source_id = ?", arguments: [id])
          }
        }
        try db.execute(
          sql: "UPDATE sources SET started_at = ? WHERE id = ?", arguments: [Int64(Date().timeIntervalSince1970), id])
        return .read(id: id, restarted: true)
      }
      try db.execute(
        sql: "INSERT INTO sources (path, size, modified, completed, started_at) VALUES (?, ?, ?, 0, ?)",
        arguments: [path, size, modified, Int64(Date().timeIntervalSince1970)])
      return .read(id: db.lastInsertedRowID, restarted: false)
    }
  }

  /// The database's size in bytes, pages still in the WAL included (the file alone lags them).
  public func databaseBytes() throws -> Int64 {
    try pool.read { db in
      (try Int64.fetchOne(db, sql: "PRAGMA page_count") ?? 0) * (try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 0)
    }
  }

  public func finishSource(_ source: Int64) throws {
    try pool.write { db in try db.execute(sql: "UPDATE sources SET completed = 1 WHERE id = ?", arguments: [source]) }
  }

  public func register(_ resources: [Resource]) throws -> [Int32: Int64] {
    try pool.write { db in
      var ids: [Int32: Int64] = [:]
      for resource in resources {
        let labels = String(
          decoding: (try? JSONSerialization.data(withJSONObject: resource.labels, options: [.sortedKeys]))
            ?? Data("{}".utf8),
          as: UTF8.self)
        try db.execute(
          sql: """
            INSERT INTO resources (kind, namespace, name, labels, detail, workload, valid_from, valid_to)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (kind, namespace, name) DO UPDATE SET
              labels = excluded.labels, detail = excluded.detail, workload = excluded.workload,
              valid_from = min(valid_from, excluded.valid_from), valid_to = max(valid_to, excluded.valid_to)
            """,
          arguments: [
            resource.kind.rawValue, resource.namespace, resource.name, labels, resource.detail, resource.workload,
            resource.validFromMicros, resource.validToMicros,
          ])
        ids[resource.id] = try Int64.fetchOne(
          db, sql: "SELECT id FROM resources WHERE kind = ? AND namespace = ? AND name = ?",
          arguments: [resource.kind.rawValue, resource.namespace, resource.name])
      }
      return ids
    }
  }

  /// The connection columns both record tables have, in their order: both addresses and ports,
  /// where it was captured, and both ends' identities.
  func bindConnection(
    client: IPAddress, _ clientPort: UInt16, server: IPAddress, _ serverPort: UInt16, _ tags: RecordTags,
    _ row: RowBlock, _ id: StoreIDs
  ) {
    row.text(client)
    row.int(Int(clientPort))
    row.text(server)
    row.int(Int(serverPort))
    row.int(id[tags.captureNode])
    row.text(tags.interface)
    row.text(tags.observationPoint.rawValue)
    bind(tags.client, row, id)
    bind(tags.server, row, id)
  }

  private func bind(_ identity: EndpointIdentity, _ row: RowBlock, _ id: StoreIDs) {
    row.text(identity.kind.rawValue)
    row.int(id[identity.pod])
    row.int(id[identity.workload])
    row.int(id[identity.node])
    row.int(id[identity.service])
    row.int(id[identity.namespace])
  }

  public func write(flows: ArraySlice<TaggedFlow>, source: Int64, ids: [Int32: Int64]) throws {
    guard !flows.isEmpty else { return }
    let id = StoreIDs(ids)
    let row = RowBlock(table: "flows", columns: 42, rows: flows.count)
    for tagged in flows {
      row.int(source)
      row.int(tagged.flow.startMicros)
      row.int(tagged.flow.endMicros)
      row.text(tagged.flow.l4Protocol.name)
      bindConnection(
        client: tagged.flow.clientIP, tagged.flow.clientPort, server: tagged.flow.serverIP, tagged.flow.serverPort,
        tagged.tags,
        row, id)
      row.int(id[tagged.tags.answeredBy])
      row.int(id[tagged.tags.requestedService])
      row.text(tagged.flow.closeType.name)
      row.text(tagged.flow.status.name)
      row.int(Int64(tagged.flow.clientToServer.packets))
      row.int(Int64(tagged.flow.clientToServer.l3Bytes))
      row.int(Int64(tagged.flow.serverToClient.packets))
      row.int(Int64(tagged.flow.serverToClient.l3Bytes))
      row.int(Int(tagged.flow.clientToServer.retransmissions + tagged.flow.serverToClient.retransmissions))
      row.int(Int(tagged.flow.clientToServer.zeroWindows + tagged.flow.serverToClient.zeroWindows))
      row.int(Int(tagged.flow.synRetransmissions))
      row.int(Int(tagged.flow.rttMicros))
      row.int(Int64(tagged.flow.srt.sumMicros))
      row.int(Int(tagged.flow.srt.count))
      row.text(tagged.flow.applicationProtocol?.name ?? "")
      row.int(Int(tagged.flow.application.requests))
      row.int(Int(tagged.flow.application.responses))
      row.int(Int(tagged.flow.application.serverErrors))
      row.int(Int(tagged.flow.application.clientErrors))
      row.endRow()
    }
    try insert(row)
  }

  public func write(requests: ArraySlice<TaggedRequest>, source: Int64, ids: [Int32: Int64]) throws {
    guard !requests.isEmpty else { return }
    let id = StoreIDs(ids)
    let lookupNumber = lookupBlock.withLock { block in
      if block.rows >= Self.lookupBlockRows { block = (block.number + 1, 0) }
      block.rows += requests.count
      return block.number
    }
    let row = RowBlock(table: "requests", columns: 44, rows: requests.count)
    var keys = RequestKeys.Batch(block: lookupNumber, requests: requests.count)
    for tagged in requests {
      keys.add(tagged.request)
      row.int(source)
      row.int(tagged.request.startMicros)
      row.int(tagged.request.endMicros)
      row.int(tagged.request.durationMicros)
      row.text(tagged.request.applicationProtocol.name)
      row.text(tagged.request.texts, .version)
      bindConnection(
        client: tagged.request.clientIP, tagged.request.clientPort, server: tagged.request.serverIP,
        tagged.request.serverPort, tagged.tags,
        row, id)
      row.int(id[tagged.tags.ingress])
      row.int(id[tagged.tags.answeredBy])
      row.int(id[tagged.tags.requestedService])
      row.text(tagged.request.texts, .method)
      row.text(tagged.request.texts, .domain)
      row.text(tagged.request.texts, .resource)
      row.text(tagged.request.texts, .endpoint)
      row.text(tagged.request.status.name)
      row.optional(tagged.request.code.map { Int64($0) })
      row.optional(tagged.request.requestTCPSequence.map { Int64($0) })
      row.optional(tagged.request.responseTCPSequence.map { Int64($0) })
      row.text(tagged.request.texts, .requestID)
      row.text(tagged.request.texts, .responseRequestID)
      row.text(tagged.request.texts, .traceID)
      row.text(tagged.request.texts, .spanID)
      row.int(Int64(tagged.request.requestBytes))
      row.int(Int64(tagged.request.responseBytes))
      row.text { buffer in
        for (index, answer) in tagged.request.answers.enumerated() {
          if index > 0 { buffer.append(byte: 10) }
          buffer.append(string: answer.type)
          buffer.append(byte: 32)
          buffer.append(string: answer.value)
        }
      }
      row.int(lookupNumber)
      row.endRow()
    }
    try insert(row, keys.finish())
  }

  public func summary() throws -> AnalysisSummary {
    try pool.read { db in
      var summary = AnalysisSummary()
      summary.flows = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM flows") ?? 0
      summary.requests = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM requests") ?? 0

      // Services: measured where the server is observed (its own interface, `s`), from the
      // 1-minute rollups (latency percentiles from their merged histograms).
      let services = RollupSchema.table("request", 60)
      let serviceRows = try Row.fetchAll(
        db,
        sql: """
          SELECT r.server_service AS id, s.namespace, s.name, SUM(r.requests) AS requests,
            SUM(r.server_errors) AS server_errors, SUM(r.client_errors) AS client_errors, SUM(r.timeouts) AS timeouts
          FROM \(services) r JOIN resources s ON s.id = r.server_service
          WHERE r.observation_point = 's' AND r.server_service != 0
          GROUP BY r.server_service ORDER BY requests DESC, s.namespace, s.name
          """)
      for row in serviceRows {
        let id: Int64 = row["id"]
        var histogram = LatencyHistogram()
        for encoded in try String.fetchAll(
          db, sql: "SELECT histogram FROM \(services) WHERE observation_point = 's' AND server_service = ?",
          arguments: [id])
        {
          histogram.merge(LatencyHistogram(encoded: encoded))
        }
        var pods: [String: Int] = [:]
        for podRow in try Row.fetchAll(
          db,
          sql: """
            SELECT p.name AS pod, SUM(r.requests) AS requests FROM \(services) r JOIN resources p ON p.id = r.server_pod
            WHERE r.observation_point = 's' AND r.server_service = ? GROUP BY r.server_pod
            """, arguments: [id])
        {
          pods[podRow["pod"]] = podRow["requests"]
        }
        summary.services.append(
          .init(
            namespace: row["namespace"], name: row["name"], requests: row["requests"],
            serverErrors: row["server_errors"],
            clientErrors: row["client_errors"], timeouts: row["timeouts"], p50Micros: histogram.quantile(0.5),
            p99Micros: histogram.quantile(0.99), pods: pods))
      }

      // DNS: counted once per lookup, at the client's own interface where it was captured there,
      // else wherever it was seen.
      let clientSide =
        try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM requests WHERE protocol = 'dns' AND observation_point = 'c'")
        ?? 0
      let where_ = clientSide > 0 ? "protocol = 'dns' AND observation_point = 'c'" : "protocol = 'dns'"
      for row in try Row.fetchAll(
        db,
        sql: """
          SELECT domain, method, COUNT(*) AS requests, SUM(status = 'timeout') AS timeouts
          FROM requests WHERE \(where_) GROUP BY domain, method ORDER BY requests DESC, domain
          """)
      {
        let domain: String = row["domain"]
        let method: String = row["method"]
        var rcodes: [String: Int] = [:]
        for codeRow in try Row.fetchAll(
          db,
          sql:
            "SELECT code, COUNT(*) AS n FROM requests WHERE \(where_) AND domain = ? AND method = ? AND code IS NOT NULL GROUP BY code",
          arguments: [domain, method])
        {
          let code: Int = codeRow["code"]
          rcodes[Self.rcodeName(code)] = codeRow["n"]
        }
        let answers = try String.fetchAll(
          db,
          sql: "SELECT DISTINCT answers FROM requests WHERE \(where_) AND domain = ? AND method = ? AND answers != ''",
          arguments: [domain, method])
        summary.dns.append(
          .init(
            name: domain, qtype: method, requests: row["requests"], rcodes: rcodes, timeouts: row["timeouts"],
            answers: Array(Set(answers.flatMap { $0.split(separator: "\n").map(String.init) })).sorted()))
      }

      // Connection failures by close type and server (Service, else pod, else address).
      for row in try Row.fetchAll(
        db,
        sql: """
          SELECT f.close_type AS failure,
            COALESCE(s.namespace || '/' || s.name, p.namespace || '/' || p.name, f.server_ip || ':' || f.server_port) AS server,
            COUNT(*) AS n
          FROM flows f LEFT JOIN resources s ON s.id = f.server_service AND f.server_service != 0
            LEFT JOIN resources p ON p.id = f.server_pod AND f.server_pod != 0
          WHERE f.status != 'ok' AND f.close_type NOT IN ('forced_report', 'in_progress')
          GROUP BY failure, server ORDER BY n DESC
          """)
      {
        summary.connectionFailures.append(.init(kind: row["failure"], server: row["server"], count: row["n"]))
      }
      return summary
    }
  }

  public func red(namespace: String, name: String, fromMicros: Int64, toMicros: Int64) throws
    -> AnalysisSummary.ServiceRow?
  {
    try pool.read { db in
      guard
        let id = try Int64.fetchOne(
          db, sql: "SELECT id FROM resources WHERE kind = 'service' AND namespace = ? AND name = ?",
          arguments: [namespace, name])
      else { return nil }
      let table = RollupSchema.table("request", 60)
      let range: StatementArguments = [id, fromMicros / 1_000_000, toMicros / 1_000_000]
      let where_ = "observation_point = 's' AND server_service = ? AND interval_start >= ? AND interval_start < ?"
      guard
        let totals = try Row.fetchOne(
          db,
          sql:
            "SELECT SUM(requests) AS requests, SUM(server_errors) AS server_errors, SUM(client_errors) AS client_errors, SUM(timeouts) AS timeouts FROM \(table) WHERE \(where_)",
          arguments: range)
      else { return nil }
      var histogram = LatencyHistogram()
      for encoded in try String.fetchAll(db, sql: "SELECT histogram FROM \(table) WHERE \(where_)", arguments: range) {
        histogram.merge(LatencyHistogram(encoded: encoded))
      }
      var pods: [String: Int] = [:]
      for row in try Row.fetchAll(
        db,
        sql:
          "SELECT p.name AS pod, SUM(r.requests) AS n FROM \(table) r JOIN resources p ON p.id = r.server_pod WHERE r.\(where_.replacingOccurrences(of: " AND ", with: " AND r.")) GROUP BY r.server_pod",
        arguments: range)
      {
        pods[row["pod"]] = row["n"]
      }
      let requests: Int = totals["requests"] ?? 0
      let serverErrors: Int = totals["server_errors"] ?? 0
      let clientErrors: Int = totals["client_errors"] ?? 0
      let timeouts: Int = totals["timeouts"] ?? 0
      return AnalysisSummary.ServiceRow(
        namespace: namespace, name: name, requests: requests, serverErrors: serverErrors, clientErrors: clientErrors,
        timeouts: timeouts, p50Micros: histogram.quantile(0.5), p99Micros: histogram.quantile(0.99), pods: pods)
    }
  }

  static func rcodeName(_ code: Int) -> String {
    let names = [0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"]
    return names[code] ?? String(code)
  }

  /// Runs a read-only query (`fathom query`); rows as column → value text.
  public func query(_ sql: String) throws -> (columns: [String], rows: [[String]]) {
    try pool.read { db in
      let rows = try Row.fetchAll(db, sql: sql)
      let columns = rows.first.map { Array($0.columnNames) } ?? []
      return (columns, rows.map { row in row.databaseValues.map { $0.isNull ? "NULL" : "\($0.storage.value ?? "")" } })
    }
  }
}

extension DatabaseValue.Storage {
  var value: Any? {
    switch self {
    case .null: nil
    case .int64(let value): value
    case .double(let value): value
    case .string(let value): value
    case .blob(let value): value
    }
  }
}
