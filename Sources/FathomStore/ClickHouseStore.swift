import FathomHTTP
import FathomKube
import FathomRecords
import Foundation
import Synchronization

/// ClickHouse over its HTTP interface, for users who outgrow one machine. MergeTree tables
/// partitioned by hour of the record's start (retention drops whole partitions), and — with a
/// cluster — local tables on every shard behind Distributed tables. The SQL stays within what
/// ClickHouse 18.16 (Debian 12's) and current versions both accept: no DateTime64, no TTL, no
/// LowCardinality, no ON CLUSTER DDL (that needs ZooKeeper), `ALTER ... DELETE` for resumes.
public final class ClickHouseStore: RecordStore {
  public struct Target: Sendable {
    /// The server queries go to (any shard of a cluster).
    public var url: String
    public var database = "fathom"
    /// With a cluster: its name in the servers' `remote_servers` and every shard's HTTP URL,
    /// where the local tables are created.
    public var cluster: String?
    public var shards: [String] = []
    /// Who to log in as (HTTP basic authentication); nil: ClickHouse's `default` user, no password.
    public var user: String?
    public var password: String?
    /// For `https://` URLs: a private CA, a client certificate, or no verification.
    public var tls = TLSSettings()

    /// `url` may carry `user:password@`; they are taken out of it (so no message or log shows the
    /// password) and sent as basic authentication. Without them, ClickHouse's own client's
    /// variables CLICKHOUSE_USER and CLICKHOUSE_PASSWORD are used when set: a password in an
    /// environment variable stays out of `ps`.
    public init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
      let (plain, user, password) = Self.splitCredentials(url)
      self.url = plain
      self.user = user ?? environment["CLICKHOUSE_USER"]
      self.password = password ?? environment["CLICKHOUSE_PASSWORD"]
      if self.user == nil, self.password != nil { self.user = "default" }
    }

    /// A URL without its user info, and the percent-decoded user and password it had.
    static func splitCredentials(_ url: String) -> (url: String, user: String?, password: String?) {
      guard var components = URLComponents(string: url), components.user != nil || components.password != nil else {
        return (url, nil, nil)
      }
      let (user, password) = (components.user, components.password)
      components.user = nil
      components.password = nil
      return (components.string ?? url, user, password)
    }

    /// The `Authorization` header value for a server URL: its own credentials, else the target's.
    func authorization(for server: String) -> (url: String, header: String?) {
      let (plain, ownUser, ownPassword) = Self.splitCredentials(server)
      let user = ownUser ?? self.user
      guard let user else { return (plain, nil) }
      let password = ownUser != nil ? (ownPassword ?? "") : (self.password ?? "")
      return (plain, "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())
    }
  }

  let target: Target
  /// ClickHouse's HTTP interface, shared with the background inserts.
  let http: ClickHouseHTTP
  static let schemaVersion = 3
  /// Per table, the columns inserts write, typed as the table has them (`alignColumns`).
  private(set) var insertColumns: [String: [(String, String)]] = [:]

  /// Record and rollup inserts, gathered into blocks of this many rows and sent in the
  /// background (reads and `finishSource` wait for them).
  let inserts = InsertPipeline(rowsPerInsert: 100_000)

  public init(_ target: Target) throws {
    self.target = target
    http = ClickHouseHTTP(target: target)
    inserts.send = { [http] sql, body in try http.execute(sql, bytes: body, on: nil) }
    try migrate()
  }

  deinit {
    do {
      try inserts.flush()
    } catch {
      FileHandle.standardError.write(Data("fathom: records not stored in ClickHouse: \(error)\n".utf8))
    }
    inserts.stop()
  }

  var localSuffix: String { target.cluster == nil ? "" : "_local" }

  // MARK: HTTP

  struct Failure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
  }

  /// Runs `sql` (with `body` as the data of an INSERT) on `url`; returns the response text.
  @discardableResult
  public func execute(_ sql: String, body: Data? = nil, on url: String? = nil) throws -> String {
    try http.execute(sql, body: body, on: url)
  }

  /// How long a schema change may take: ClickHouse rewrites a converted column in every part
  /// before it answers (once per store; a large one takes minutes).
  static let alterTimeoutSeconds = 3_600

  // MARK: Schema

  static let flowColumns: [(String, String)] =
    [
      ("source_id", "UInt64"), ("start_us", "Int64"), ("end_us", "Int64"), ("protocol", L4Protocol.clickHouseType),
    ] + connectionColumns + [
      ("answered_by", "UInt64"), ("requested_service", "UInt64"), ("close_type", CloseType.clickHouseType),
      ("status", FlowStatus.clickHouseType),
      ("c2s_packets", "UInt64"), ("c2s_bytes", "UInt64"), ("s2c_packets", "UInt64"), ("s2c_bytes", "UInt64"),
      ("retransmissions", "UInt32"), ("zero_windows", "UInt32"), ("syn_retransmissions", "UInt32"),
      ("rtt_us", "UInt32"),
      ("srt_sum_us", "UInt64"), ("srt_count", "UInt32"), ("app_protocol", ApplicationProtocol.clickHouseType),
      ("requests", "UInt32"),
      ("responses", "UInt32"), ("server_errors", "UInt32"), ("client_errors", "UInt32"),
    ]

  static let requestColumns: [(String, String)] =
    [
      ("source_id", "UInt64"), ("start_us", "Int64"), ("end_us", "Int64"), ("duration_us", "Int64"),
      ("protocol", ApplicationProtocol.clickHouseType), ("version", "String"),
    ] + connectionColumns + [
      ("ingress", "UInt64"), ("answered_by", "UInt64"), ("requested_service", "UInt64"), ("method", "String"),
      ("domain", "String"), ("resource", "String"), ("endpoint", "String"), ("status", RequestStatus.clickHouseType),
      ("code", "Nullable(Int32)"), ("req_tcp_seq", "Nullable(UInt32)"), ("resp_tcp_seq", "Nullable(UInt32)"),
      ("x_request_id_req", "String"), ("x_request_id_resp", "String"), ("trace_id", "String"), ("span_id", "String"),
      ("req_bytes", "UInt64"), ("resp_bytes", "UInt64"), ("answers", "String"),
    ]

  /// Written by `NativeBlock.connection`, in this order.
  static let connectionColumns: [(String, String)] =
    [
      ("client_ip", "String"), ("client_port", "UInt16"), ("server_ip", "String"), ("server_port", "UInt16"),
      ("capture_node", "UInt64"), ("interface", "String"), ("observation_point", ObservationPoint.clickHouseType),
    ] + endpointColumns("client") + endpointColumns("server")

  static func endpointColumns(_ side: String) -> [(String, String)] {
    [
      ("\(side)_kind", EndpointIdentity.Kind.clickHouseType), ("\(side)_pod", "UInt64"), ("\(side)_workload", "UInt64"),
      ("\(side)_node", "UInt64"),
      ("\(side)_service", "UInt64"), ("\(side)_namespace", "UInt64"),
    ]
  }

  /// Record tables: MergeTree partitioned by the hour of `start_us` (DeepFlow keeps flow logs
  /// per hour), ordered for the summary's access path.
  static func recordTable(_ name: String, _ columns: [(String, String)], order: String) -> String {
    let list = columns.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
    return
      "CREATE TABLE IF NOT EXISTS \(name) (\(list)) ENGINE = MergeTree() PARTITION BY toStartOfHour(toDateTime(intDiv(start_us, 1000000))) ORDER BY (\(order))"
  }

  func migrate() throws {
    let db = target.database
    let servers = target.cluster == nil ? [target.url] : target.shards
    guard !servers.isEmpty else { throw Failure(message: "clickhouse: a cluster needs its shards' URLs") }
    for server in Set(servers + [target.url]) {
      try execute("CREATE DATABASE IF NOT EXISTS \(db)", on: server)
    }
    try execute(
      "CREATE TABLE IF NOT EXISTS \(db).schema_migrations (version UInt32, applied DateTime DEFAULT now()) ENGINE = TinyLog"
    )
    let applied =
      Int(
        try execute("SELECT max(version) FROM \(db).schema_migrations").trimmingCharacters(in: .whitespacesAndNewlines))
      ?? 0
    if applied < 1 { try migrateV1(servers: servers) }
    if applied < 2 { try migrateV2(servers: servers) }
    // v3 (enum columns; requests' `end_us` computed in tables made from now on) is
    // `alignColumns`, which every open runs: a build with a new case adds it to the tables
    // without a schema version of its own.
    insertColumns = try alignColumns(servers: servers)
    if applied < 3 { try execute("INSERT INTO \(db).schema_migrations (version) VALUES (3)") }
  }

  /// Columns record tables made since schema v3 compute instead of storing (`end_us` of a
  /// request: 8% of its bytes on disk). Tables made before store them, and inserts send them.
  static let computedColumns = ["requests": ["end_us": "Int64 ALIAS start_us + duration_us"]]

  static let rollupSortingKey = ["server_service", "interval_start"]

  /// Every table inserts write: its columns, in the order the row writers write them, and its
  /// sorting key.
  static var insertTables: [(name: String, columns: [(String, String)], sortingKey: [String])] {
    [
      ("flows", flowColumns, ["start_us", "server_service"]),
      ("requests", requestColumns, ["server_service", "observation_point", "start_us"]),
    ]
      + RollupBuilder.resolutions.flatMap { resolution in
        ["request", "flow"].map { (RollupSchema.table($0, resolution), rollupColumns($0), rollupSortingKey) }
      }
  }

  /// The names of the columns an insert sends (not those the table computes).
  static func sentNames(_ columns: [(String, String)]) -> String {
    columns.filter { $0.1 != "ALIAS" }.map(\.0).joined(separator: ", ")
  }

  /// Gives every enum column all of this build's names (`ClickHouseEnumValue`) on every server
  /// with tables, and returns per table the columns inserts write, typed as the table that takes
  /// the insert has them (`ALIAS` for one it computes, which is not sent).
  func alignColumns(servers: [String]) throws -> [String: [(String, String)]] {
    let db = target.database
    // Local tables on the shards; with a cluster, also its Distributed tables on the target.
    var places = servers.map { (server: $0, suffix: localSuffix) }
    if target.cluster != nil { places.append((target.url, "")) }
    var insertColumns: [String: [(String, String)]] = [:]
    for (server, suffix) in places {
      var types: [String: String] = [:]
      var computed: Set<String> = []
      for row in try rows(
        "SELECT table, name, type, default_kind FROM system.columns WHERE database = '\(db)'", on: server)
      where row.count == 4 {
        types["\(row[0]).\(row[1])"] = row[2]
        if row[3] == "ALIAS" { computed.insert("\(row[0]).\(row[1])") }
      }
      for table in Self.insertTables {
        var columns = table.columns
        for index in columns.indices {
          let (column, wantedType) = columns[index]
          // A column the table computes (tables made since v3) is not sent; its values are dropped.
          if computed.contains("\(table.name)\(suffix).\(column)") {
            columns[index].1 = "ALIAS"
            continue
          }
          guard ClickHouseEnum.parse(wantedType) != nil else { continue }
          let place = "\(db).\(table.name)\(suffix)"
          guard let actual = types["\(table.name)\(suffix).\(column)"] else {
            throw Failure(message: "clickhouse \(server): \(place) has no column \(column)")
          }
          let aligned: String
          do {
            aligned = try Self.enumType(
              actual: actual, wanted: wantedType, inSortingKey: table.sortingKey.contains(column))
          } catch {
            throw Failure(message: "clickhouse \(server): \(place).\(column) \(error)")
          }
          if aligned != actual {
            try http.execute(
              "ALTER TABLE \(place) MODIFY COLUMN \(column) \(aligned)", bytes: nil, on: server,
              timeoutSeconds: Self.alterTimeoutSeconds)
          }
          columns[index].1 = aligned
        }
        if server == target.url && suffix.isEmpty { insertColumns[table.name] = columns }
      }
    }
    return insertColumns
  }

  /// What an enum column of type `actual` must become to hold every case of `wanted` (an
  /// `Enum8` definition): a String column becomes the `Enum8` in place (ClickHouse rewrites the
  /// column) — except a sorting-key column of a table made before schema v3, which 18.16 changes
  /// in metadata only: it stays String and is written names; an `Enum8` gains the names it lacks.
  static func enumType(actual: String, wanted: String, inSortingKey: Bool) throws -> String {
    if actual == "String" { return inSortingKey ? actual : wanted }
    guard let existing = ClickHouseEnum.parse(actual), let cases = ClickHouseEnum.parse(wanted) else {
      throw Failure(message: "is \(actual), not String or Enum8")
    }
    do {
      return try ClickHouseEnum.extended(existing, toHold: cases).map(ClickHouseEnum.type) ?? actual
    } catch {
      throw Failure(message: "cannot take Fathom's codes: \(error)")
    }
  }

  /// v2: 1 s and 1 min rollups; partitions of 4 h and 12 h (DeepFlow's retention units).
  func migrateV2(servers: [String]) throws {
    let db = target.database
    for resolution in RollupBuilder.resolutions {
      let partitionSeconds = resolution == 1 ? 14_400 : 43_200
      for kind in ["request", "flow"] {
        let table = RollupSchema.table(kind, resolution)
        let columns = Self.rollupColumns(kind).map { "\($0.0) \($0.1)" }
        for server in servers {
          try execute(
            """
            CREATE TABLE IF NOT EXISTS \(db).\(table)\(localSuffix) (\(columns.joined(separator: ", ")))
            ENGINE = MergeTree() PARTITION BY intDiv(interval_start, \(partitionSeconds)) ORDER BY (\(Self.rollupSortingKey.joined(separator: ", ")))
            """, on: server)
        }
        if let cluster = target.cluster {
          try execute(
            "CREATE TABLE IF NOT EXISTS \(db).\(table) AS \(db).\(table)_local ENGINE = Distributed(\(cluster), \(db), \(table)_local, rand())"
          )
        }
      }
    }
    try execute("INSERT INTO \(db).schema_migrations (version) VALUES (2)")
  }

  /// A rollup table's columns (`RollupSchema`), typed.
  static func rollupColumns(_ kind: String) -> [(String, String)] {
    let names =
      kind == "request"
      ? RollupSchema.requestKey + RollupSchema.requestValues : RollupSchema.flowKey + RollupSchema.flowValues
    return names.map { column in
      switch column {
      case "protocol": (column, kind == "request" ? ApplicationProtocol.clickHouseType : L4Protocol.clickHouseType)
      case "observation_point": (column, ObservationPoint.clickHouseType)
      case "endpoint", "histogram": (column, "String")
      case "interval_start", "latency_sum_us", "latency_max_us", "source_id": (column, "Int64")
      default: (column, "UInt64")
      }
    }
  }

  func migrateV1(servers: [String]) throws {
    let db = target.database
    // v1. Dictionary and sources are small and live on the server queries go to.
    try execute(
      """
      CREATE TABLE IF NOT EXISTS \(db).sources (id UInt64, path String, size Int64, modified Int64, completed UInt8,
        version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY id
      """)
    try execute(
      """
      CREATE TABLE IF NOT EXISTS \(db).resources (id UInt64, kind String, namespace String, name String, labels String,
        detail String, workload String, valid_from Int64, valid_to Int64, version UInt64)
        ENGINE = ReplacingMergeTree(version) ORDER BY id
      """)
    for server in servers {
      for table in Self.insertTables where ["flows", "requests"].contains(table.name) {
        let computed = Self.computedColumns[table.name] ?? [:]
        let columns = table.columns.map { ($0.0, computed[$0.0] ?? $0.1) }
        try execute(
          Self.recordTable(
            "\(db).\(table.name)\(localSuffix)", columns, order: table.sortingKey.joined(separator: ", ")),
          on: server)
      }
    }
    if let cluster = target.cluster {
      for table in ["flows", "requests"] {
        try execute(
          "CREATE TABLE IF NOT EXISTS \(db).\(table) AS \(db).\(table)_local ENGINE = Distributed(\(cluster), \(db), \(table)_local, rand())"
        )
      }
    }
    try execute("INSERT INTO \(db).schema_migrations (version) VALUES (1)")
  }

  public func write(rollups: RollupBuilder, source: Int64, ids: [Int32: Int64]) throws {
    let ids = StoreIDs(ids)
    let sourceID = UInt64(bitPattern: source)
    for resolution in RollupBuilder.resolutions {
      try insert(rollups.requestRollups(resolution), into: RollupSchema.table("request", resolution)) {
        rows, key, value, count in
        rows.integers(count) { _ in sourceID }
        rows.integers(count) { UInt64(bitPattern: key[$0].intervalStart) }
        rows.ids(count, ids) { key[$0].clientPod }
        rows.ids(count, ids) { key[$0].clientService }
        rows.ids(count, ids) { key[$0].serverPod }
        rows.ids(count, ids) { key[$0].serverService }
        rows.names(count) { ApplicationProtocol(rawValue: key[$0].protocolCode) ?? .http }
        rows.names(count) { RollupBuilder.point(key[$0].observationPoint) }
        rows.strings(count) { rollups.endpoints[Int(key[$0].endpoint)] }
        rows.integers(count) { value[$0].requests }
        rows.integers(count) { value[$0].responses }
        rows.integers(count) { value[$0].clientErrors }
        rows.integers(count) { value[$0].serverErrors }
        rows.integers(count) { value[$0].timeouts }
        rows.integers(count) { UInt64(bitPattern: value[$0].latencySum) }
        rows.integers(count) { UInt64(bitPattern: value[$0].latencyMax) }
        rows.texts(count) { row, buffer in value[row].histogram.appendEncoded(to: &buffer) }
      }
      try insert(rollups.flowRollups(resolution), into: RollupSchema.table("flow", resolution)) {
        rows, key, value, count in
        rows.integers(count) { _ in sourceID }
        rows.integers(count) { UInt64(bitPattern: key[$0].intervalStart) }
        rows.ids(count, ids) { key[$0].clientPod }
        rows.ids(count, ids) { key[$0].serverPod }
        rows.ids(count, ids) { key[$0].serverService }
        rows.names(count) { RollupBuilder.point(key[$0].observationPoint) }
        rows.names(count) { L4Protocol(rawValue: key[$0].l4Protocol) ?? .tcp }
        rows.integers(count) { value[$0].bytes }
        rows.integers(count) { value[$0].packets }
        rows.integers(count) { value[$0].newFlows }
        rows.integers(count) { value[$0].closedFlows }
        rows.integers(count) { value[$0].retransmissions }
        rows.integers(count) { value[$0].zeroWindows }
        rows.integers(count) { value[$0].rttSum }
        rows.integers(count) { value[$0].rttCount }
        rows.integers(count) { value[$0].rttMax }
        rows.integers(count) { value[$0].establishFailures }
        rows.integers(count) { value[$0].resets }
      }
    }
  }

  /// Queues a rollup table's rows, written by `write(rows, keys, values, count)` per pass
  /// (`inPasses`). Pointers into the table, not copies: every copy of a rollup retained its
  /// histogram.
  private func insert<Key, Value>(
    _ rollups: RollupTable<Key, Value>, into table: String,
    _ write: (inout NativeBlock, UnsafePointer<Key>, UnsafePointer<Value>, Int) -> Void
  ) throws {
    guard !rollups.isEmpty else { return }
    try insert(into: table) { rows in
      rollups.keys.withUnsafeBufferPointer { keys in
        rollups.values.withUnsafeBufferPointer { values in
          Self.inPasses(keys.count) { first, count in
            write(&rows, keys.baseAddress! + first, values.baseAddress! + first, count)
          }
        }
      }
    }
  }

  /// Queues rows for `table`, in its columns as `alignColumns` found them (those it computes
  /// not sent).
  private func insert(into table: String, _ write: (inout NativeBlock) -> Void) throws {
    let columns = insertColumns[table] ?? []
    try inserts.append(
      sql: "INSERT INTO \(target.database).\(table) (\(Self.sentNames(columns))) FORMAT Native", columns: columns,
      write)
  }

  /// Runs `pass(first, count)` over `total` rows, 256 at a time: a pass's records stay in
  /// cache while its columns are written one after another.
  @inline(__always) static func inPasses(_ total: Int, _ pass: (_ first: Int, _ count: Int) -> Void) {
    var first = 0
    while first < total {
      let count = Swift.min(256, total - first)
      pass(first, count)
      first += count
    }
  }

  // MARK: Writing

  public func beginSource(path: String, size: Int64, modified: Int64) throws -> SourceStart {
    try inserts.flush()
    let db = target.database
    let id = Self.stableID("source/\(path)/\(size)/\(modified)")
    let row = try execute(
      "SELECT completed FROM \(db).sources FINAL WHERE id = \(id) FORMAT TSV"
    ).trimmingCharacters(in: .whitespacesAndNewlines)
    if row == "1" { return .skip }
    if row == "0" {
      // An earlier run stopped inside this source: remove its rows everywhere, then read it again.
      for server in target.cluster == nil ? [target.url] : target.shards {
        let rollups = RollupBuilder.resolutions.flatMap {
          [RollupSchema.table("request", $0), RollupSchema.table("flow", $0)]
        }
        for table in ["flows", "requests"] + rollups {
          let column = table.contains("rollup") ? "toUInt64(source_id)" : "source_id"
          try execute("ALTER TABLE \(db).\(table)\(localSuffix) DELETE WHERE \(column) = \(id)", on: server)
          try waitForMutations(table: "\(table)\(localSuffix)", on: server)
        }
      }
    }
    try insertSource(id: id, path: path, size: size, modified: modified, completed: false)
    return .read(id: Int64(bitPattern: id), restarted: row == "0")
  }

  /// `ALTER ... DELETE` is asynchronous (18.16 has no `mutations_sync`): wait, bounded.
  func waitForMutations(table: String, on server: String) throws {
    for _ in 0..<300 {
      let pending = try rows(
        "SELECT count() FROM system.mutations WHERE database = '\(target.database)' AND table = '\(table)' AND is_done = 0",
        on: server)
      if pending.first?.first == "0" { return }
      usleep(100_000)
    }
    throw Failure(message: "clickhouse \(server): deleting an interrupted source from \(table) did not finish in 30 s")
  }

  func insertSource(id: UInt64, path: String, size: Int64, modified: Int64, completed: Bool) throws {
    let line = [
      String(id), Self.escape(path), String(size), String(modified), completed ? "1" : "0", String(Self.version()),
    ]
    .joined(separator: "\t")
    try execute("INSERT INTO \(target.database).sources FORMAT TabSeparated", body: Data((line + "\n").utf8))
  }

  public func finishSource(_ source: Int64) throws {
    // Complete only once every record of the source is stored.
    try inserts.flush()
    let id = UInt64(bitPattern: source)
    let row = try execute(
      "SELECT path, size, modified FROM \(target.database).sources FINAL WHERE id = \(id) FORMAT TSV"
    ).split(separator: "\t").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
    guard row.count == 3 else { throw Failure(message: "clickhouse: source \(id) unknown") }
    try insertSource(id: id, path: row[0], size: Int64(row[1]) ?? 0, modified: Int64(row[2]) ?? 0, completed: true)
  }

  public func register(_ resources: [Resource]) throws -> [Int32: Int64] {
    var ids: [Int32: Int64] = [:]
    var body = ""
    for resource in resources {
      let id = Self.stableID("\(resource.kind.rawValue)/\(resource.namespace)/\(resource.name)")
      ids[resource.id] = Int64(bitPattern: id)
      let labels = String(
        decoding: (try? JSONSerialization.data(withJSONObject: resource.labels, options: [.sortedKeys]))
          ?? Data("{}".utf8),
        as: UTF8.self)
      body +=
        [
          String(id), resource.kind.rawValue, resource.namespace, resource.name, labels, resource.detail,
          resource.workload,
          String(resource.validFromMicros), String(resource.validToMicros), String(Self.version()),
        ].map(Self.escape).joined(separator: "\t") + "\n"
    }
    if !body.isEmpty {
      try execute("INSERT INTO \(target.database).resources FORMAT TabSeparated", body: Data(body.utf8))
    }
    return ids
  }

  public func write(flows: ArraySlice<TaggedFlow>, source: Int64, ids: [Int32: Int64]) throws {
    let ids = StoreIDs(ids)
    guard !flows.isEmpty else { return }
    let sourceID = UInt64(bitPattern: source)
    try insert(into: "flows") { rows in
      // Borrowed in place, a column at a time (see `appendColumns`).
      flows.withUnsafeBufferPointer { records in
        let tags =
          UnsafeRawPointer(records.baseAddress!) + MemoryLayout<TaggedFlow>.offset(of: \TaggedFlow.tags)!
        Self.inPasses(records.count) { first, count in
          let record = records.baseAddress! + first
          rows.integers(count) { _ in sourceID }
          rows.integers(count) { UInt64(bitPattern: record[$0].flow.startMicros) }
          rows.integers(count) { UInt64(bitPattern: record[$0].flow.endMicros) }
          rows.names(count) { record[$0].flow.l4Protocol }
          rows.connections(
            count, ids, client: { record[$0].flow.clientIP }, clientPort: { record[$0].flow.clientPort },
            server: { record[$0].flow.serverIP }, serverPort: { record[$0].flow.serverPort },
            tags: { (tags + (first + $0) * MemoryLayout<TaggedFlow>.stride).assumingMemoryBound(to: RecordTags.self) })
          rows.ids(count, ids) { record[$0].tags.answeredBy }
          rows.ids(count, ids) { record[$0].tags.requestedService }
          rows.names(count) { record[$0].flow.closeType }
          rows.names(count) { record[$0].flow.status }
          rows.integers(count) { record[$0].flow.clientToServer.packets }
          rows.integers(count) { record[$0].flow.clientToServer.l3Bytes }
          rows.integers(count) { record[$0].flow.serverToClient.packets }
          rows.integers(count) { record[$0].flow.serverToClient.l3Bytes }
          rows.integers(count) {
            UInt64(record[$0].flow.clientToServer.retransmissions + record[$0].flow.serverToClient.retransmissions)
          }
          rows.integers(count) {
            UInt64(record[$0].flow.clientToServer.zeroWindows + record[$0].flow.serverToClient.zeroWindows)
          }
          rows.integers(count) { UInt64(record[$0].flow.synRetransmissions) }
          rows.integers(count) { UInt64(record[$0].flow.rttMicros) }
          rows.integers(count) { UInt64(truncatingIfNeeded: record[$0].flow.srt.sumMicros) }
          rows.integers(count) { UInt64(record[$0].flow.srt.count) }
          rows.names(count) { record[$0].flow.applicationProtocol }
          rows.integers(count) { UInt64(record[$0].flow.application.requests) }
          rows.integers(count) { UInt64(record[$0].flow.application.responses) }
          rows.integers(count) { UInt64(record[$0].flow.application.serverErrors) }
          rows.integers(count) { UInt64(record[$0].flow.application.clientErrors) }
        }
      }
    }
  }

  public func write(requests: ArraySlice<TaggedRequest>, source: Int64, ids: [Int32: Int64]) throws {
    let ids = StoreIDs(ids)
    guard !requests.isEmpty else { return }
    let sourceID = UInt64(bitPattern: source)
    try insert(into: "requests") { rows in
      // Borrowed in place: a copy of each record retained its texts and answers.
      requests.withUnsafeBufferPointer { records in
        Self.inPasses(records.count) { first, count in
          Self.appendColumns(
            UnsafeBufferPointer(rebasing: records[first..<first + count]), source: sourceID, ids: ids, to: &rows)
        }
      }
    }
  }

  /// Request rows a column at a time (`NativeBlock`'s whole columns), in the requests table's
  /// column order (`requestColumns`).
  private static func appendColumns(
    _ records: UnsafeBufferPointer<TaggedRequest>, source: UInt64, ids: StoreIDs, to rows: inout NativeBlock
  ) {
    let count = records.count
    let tags = UnsafeRawPointer(records.baseAddress!) + MemoryLayout<TaggedRequest>.offset(of: \TaggedRequest.tags)!
    // Each record's texts looked at once (through `records[row].request.texts` in every text
    // column, each look retained and released the texts' storage).
    withUnsafeTemporaryAllocation(of: RequestTexts.Fields.self, capacity: count) { fields in
      for row in 0..<count { fields.initializeElement(at: row, to: textFields(records[row].request)) }
      rows.integers(count) { _ in source }
      rows.integers(count) { UInt64(bitPattern: records[$0].request.startMicros) }
      rows.integers(count) { UInt64(bitPattern: records[$0].request.endMicros) }
      rows.integers(count) { UInt64(bitPattern: records[$0].request.durationMicros) }
      rows.names(count) { records[$0].request.applicationProtocol }
      rows.texts(count) { row, write in write(fields[row][.version]) }
      rows.connections(
        count, ids, client: { records[$0].request.clientIP }, clientPort: { records[$0].request.clientPort },
        server: { records[$0].request.serverIP }, serverPort: { records[$0].request.serverPort },
        tags: { (tags + $0 * MemoryLayout<TaggedRequest>.stride).assumingMemoryBound(to: RecordTags.self) })
      rows.ids(count, ids) { records[$0].tags.ingress }
      rows.ids(count, ids) { records[$0].tags.answeredBy }
      rows.ids(count, ids) { records[$0].tags.requestedService }
      for field in [RequestTexts.Field.method, .domain, .resource, .endpoint] {
        rows.texts(count) { row, write in write(fields[row][field]) }
      }
      rows.names(count) { records[$0].request.status }
      rows.optionals(count) { records[$0].request.code.map { Int64($0) } }
      rows.optionals(count) { records[$0].request.requestTCPSequence.map { Int64($0) } }
      rows.optionals(count) { records[$0].request.responseTCPSequence.map { Int64($0) } }
      for field in [RequestTexts.Field.requestID, .responseRequestID, .traceID, .spanID] {
        rows.identifiers(count) { fields[$0][field] }
      }
      rows.integers(count) { records[$0].request.requestBytes }
      rows.integers(count) { records[$0].request.responseBytes }
      rows.texts(count) { row, write in
        let answers = records[row].request.answers
        if answers.isEmpty {
          write(UnsafeRawBufferPointer(start: nil, count: 0))
        } else {
          var text = answers.map { "\($0.type) \($0.value)" }.joined(separator: "\n")
          text.withUTF8 { write(UnsafeRawBufferPointer($0)) }
        }
      }
      fields.deinitialize()
    }
  }

  /// A borrowed record's texts as byte views, valid while the record is.
  @inline(__always) private static func textFields(_ request: borrowing RequestLog) -> RequestTexts.Fields {
    request.texts.unsafeFields
  }

  /// TabSeparated escaping.
  static func escape(_ text: String) -> String {
    guard text.utf8.contains(where: { $0 == 9 || $0 == 10 || $0 == 13 || $0 == 92 }) else { return text }
    var output = ""
    for character in text {
      switch character {
      case "\t": output += "\\t"
      case "\n": output += "\\n"
      case "\r": output += "\\r"
      case "\\": output += "\\\\"
      default: output.append(character)
      }
    }
    return output
  }

  static func unescape(_ text: Substring) -> String {
    guard text.contains("\\") else { return String(text) }
    var output = ""
    var escaped = false
    for character in text {
      if escaped {
        switch character {
        case "t": output += "\t"
        case "n": output += "\n"
        case "r": output += "\r"
        default: output.append(character)
        }
        escaped = false
      } else if character == "\\" {
        escaped = true
      } else {
        output.append(character)
      }
    }
    return output
  }

  /// A 63-bit FNV-1a id, the same for the same key on every shard and run.
  static func stableID(_ key: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in key.utf8 {
      hash ^= UInt64(byte)
      hash = hash &* 0x100_0000_01b3
    }
    return hash & 0x7fff_ffff_ffff_ffff
  }

  static func version() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1_000_000) }

  // MARK: Queries

  func rows(_ sql: String, on server: String? = nil) throws -> [[String]] {
    // A read sees every record written before it.
    try inserts.flush()
    return try execute(sql + " FORMAT TSV", on: server).split(separator: "\n").map { line in
      line.split(separator: "\t", omittingEmptySubsequences: false).map(Self.unescape)
    }
  }

  public func summary() throws -> AnalysisSummary {
    let db = target.database
    var names: [String: (namespace: String, name: String)] = [:]
    for row in try rows("SELECT id, namespace, name FROM \(db).resources FINAL") where row.count == 3 {
      names[row[0]] = (row[1], row[2])
    }
    var summary = AnalysisSummary()
    summary.flows = Int(try rows("SELECT count() FROM \(db).flows").first?.first ?? "0") ?? 0
    summary.requests = Int(try rows("SELECT count() FROM \(db).requests").first?.first ?? "0") ?? 0

    // Services at the server (`s`), from the 1-minute rollups; percentiles from merged histograms.
    let rollup = "\(db).\(RollupSchema.table("request", 60))"
    var pods: [String: [String: Int]] = [:]
    for row in try rows(
      "SELECT server_service, server_pod, sum(requests) FROM \(rollup) WHERE observation_point = 's' AND server_service != 0 GROUP BY server_service, server_pod"
    ) where row.count == 3 {
      if let pod = names[row[1]] { pods[row[0], default: [:]][pod.name] = Int(row[2]) ?? 0 }
    }
    for row in try rows(
      """
      SELECT server_service, sum(requests), sum(server_errors), sum(client_errors), sum(timeouts), groupArray(histogram)
      FROM \(rollup) WHERE observation_point = 's' AND server_service != 0 GROUP BY server_service
      """) where row.count == 6
    {
      guard let name = names[row[0]] else { continue }
      var histogram = LatencyHistogram()
      for encoded in Self.parseArray(row[5]) { histogram.merge(LatencyHistogram(encoded: encoded)) }
      summary.services.append(
        .init(
          namespace: name.namespace, name: name.name, requests: Int(row[1]) ?? 0, serverErrors: Int(row[2]) ?? 0,
          clientErrors: Int(row[3]) ?? 0, timeouts: Int(row[4]) ?? 0, p50Micros: histogram.quantile(0.5),
          p99Micros: histogram.quantile(0.99), pods: pods[row[0]] ?? [:]))
    }
    summary.services.sort { ($0.requests, $1.namespace, $1.name) > ($1.requests, $0.namespace, $0.name) }

    let clientSide =
      Int(
        try rows("SELECT count() FROM \(db).requests WHERE protocol = 'dns' AND observation_point = 'c'").first?.first
          ?? "0") ?? 0
    let filter = clientSide > 0 ? "protocol = 'dns' AND observation_point = 'c'" : "protocol = 'dns'"
    var rcodes: [String: [String: Int]] = [:]
    for row in try rows(
      "SELECT domain, method, code, count() FROM \(db).requests WHERE \(filter) AND code IS NOT NULL GROUP BY domain, method, code"
    ) where row.count == 4 {
      rcodes["\(row[0])\t\(row[1])", default: [:]][SQLiteStore.rcodeName(Int(row[2]) ?? -1)] = Int(row[3]) ?? 0
    }
    for row in try rows(
      "SELECT domain, method, count(), sum(status = 'timeout'), groupUniqArray(answers) FROM \(db).requests WHERE \(filter) GROUP BY domain, method"
    ) where row.count == 5 {
      let answers = Self.parseArray(row[4]).flatMap { $0.split(separator: "\n").map(String.init) }.filter {
        !$0.isEmpty
      }
      summary.dns.append(
        .init(
          name: row[0], qtype: row[1], requests: Int(row[2]) ?? 0, rcodes: rcodes["\(row[0])\t\(row[1])"] ?? [:],
          timeouts: Int(row[3]) ?? 0, answers: Array(Set(answers)).sorted()))
    }
    summary.dns.sort { ($0.requests, $1.name) > ($1.requests, $0.name) }

    var failures: [String: Int] = [:]
    for row in try rows(
      """
      SELECT close_type, server_service, server_pod, server_ip, server_port, count() FROM \(db).flows
      WHERE status != 'ok' AND close_type NOT IN ('forced_report', 'in_progress')
      GROUP BY close_type, server_service, server_pod, server_ip, server_port
      """) where row.count == 6
    {
      let server =
        names[row[1]].map { "\($0.namespace)/\($0.name)" } ?? names[row[2]].map { "\($0.namespace)/\($0.name)" }
        ?? "\(row[3]):\(row[4])"
      failures["\(row[0])\t\(server)", default: 0] += Int(row[5]) ?? 0
    }
    summary.connectionFailures = failures.map { key, count in
      let parts = key.split(separator: "\t", maxSplits: 1).map(String.init)
      return .init(kind: parts[0], server: parts[1], count: count)
    }.sorted { ($0.count, $1.kind, $1.server) > ($1.count, $0.kind, $0.server) }
    return summary
  }

  public func red(namespace: String, name: String, fromMicros: Int64, toMicros: Int64) throws
    -> AnalysisSummary.ServiceRow?
  {
    let db = target.database
    let quoted = { (text: String) in
      "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }
    guard
      let id = try rows(
        "SELECT id FROM \(db).resources FINAL WHERE kind = 'service' AND namespace = \(quoted(namespace)) AND name = \(quoted(name))"
      ).first?.first
    else { return nil }
    let filter =
      "observation_point = 's' AND server_service = \(id) AND interval_start >= \(fromMicros / 1_000_000) AND interval_start < \(toMicros / 1_000_000)"
    let table = "\(db).\(RollupSchema.table("request", 60))"
    guard
      let totals = try rows(
        "SELECT sum(requests), sum(server_errors), sum(client_errors), sum(timeouts), groupArray(histogram) FROM \(table) WHERE \(filter)"
      ).first, totals.count == 5
    else { return nil }
    var histogram = LatencyHistogram()
    for encoded in Self.parseArray(totals[4]) { histogram.merge(LatencyHistogram(encoded: encoded)) }
    var names: [String: String] = [:]
    for row in try rows("SELECT id, name FROM \(db).resources FINAL WHERE kind = 'pod'") where row.count == 2 {
      names[row[0]] = row[1]
    }
    var pods: [String: Int] = [:]
    for row in try rows("SELECT server_pod, sum(requests) FROM \(table) WHERE \(filter) GROUP BY server_pod")
    where row.count == 2 {
      pods[names[row[0]] ?? row[0]] = Int(row[1]) ?? 0
    }
    return .init(
      namespace: namespace, name: name, requests: Int(totals[0]) ?? 0, serverErrors: Int(totals[1]) ?? 0,
      clientErrors: Int(totals[2]) ?? 0, timeouts: Int(totals[3]) ?? 0, p50Micros: histogram.quantile(0.5),
      p99Micros: histogram.quantile(0.99), pods: pods)
  }

  /// Parses ClickHouse's TSV rendering of Array(String): `['a','b']`.
  static func parseArray(_ text: String) -> [String] {
    guard text.hasPrefix("["), text.hasSuffix("]") else { return [] }
    var items: [String] = []
    var current = ""
    var inString = false
    var escaped = false
    for character in text.dropFirst().dropLast() {
      if escaped {
        current.append(character == "n" ? "\n" : character == "t" ? "\t" : character)
        escaped = false
      } else if character == "\\" {
        escaped = true
      } else if character == "'" {
        if inString { items.append(current) }
        current = ""
        inString.toggle()
      } else if inString {
        current.append(character)
      }
    }
    return items
  }

  /// Retention: drops every hourly partition of records whose hour ended by `micros`, and
  /// every rollup partition whose span did.
  public func dropPartitions(olderThan micros: Int64) throws -> Int {
    var dropped = 0
    for server in target.cluster == nil ? [target.url] : target.shards {
      for table in ["flows\(localSuffix)", "requests\(localSuffix)"] {
        // The partition id of toStartOfHour(...) is the hour's Unix time.
        let partitions = try rows(
          "SELECT DISTINCT partition_id FROM system.parts WHERE database = '\(target.database)' AND table = '\(table)' AND active",
          on: server)
        for partition in partitions.compactMap(\.first) {
          guard let hour = Int64(partition), hour + 3_600 <= micros / 1_000_000 else { continue }
          try execute("ALTER TABLE \(target.database).\(table) DROP PARTITION ID '\(partition)'", on: server)
          dropped += 1
        }
      }
      // Rollups are partitioned by intDiv(interval_start, 4 h or 12 h): drop the whole ones.
      for resolution in RollupBuilder.resolutions {
        let span = resolution == 1 ? Int64(14_400) : Int64(43_200)
        for kind in ["request", "flow"] {
          let table = "\(RollupSchema.table(kind, resolution))\(localSuffix)"
          let partitions = try rows(
            "SELECT DISTINCT partition_id FROM system.parts WHERE database = '\(target.database)' AND table = '\(table)' AND active",
            on: server)
          for partition in partitions.compactMap(\.first) {
            guard let index = Int64(partition), (index + 1) * span <= micros / 1_000_000 else { continue }
            try execute("ALTER TABLE \(target.database).\(table) DROP PARTITION ID '\(partition)'", on: server)
            dropped += 1
          }
        }
      }
    }
    return dropped
  }
}

/// ClickHouse's HTTP interface: POSTs with bounded retries over keep-alive connections. Apart
/// from the store so its background inserts can outlive the store's own deinit.
final class ClickHouseHTTP: @unchecked Sendable {
  let target: ClickHouseStore.Target
  /// Idle keep-alive connections per server (plain http only). A request takes one (or opens
  /// one) and puts it back when done, so threads never share a socket.
  let connections = Mutex<[String: [HTTPConnection]]>([:])
  /// Attempts per request; a failing server gets a bounded retry, then a clear error.
  let attempts = 4

  init(target: ClickHouseStore.Target) { self.target = target }

  /// Runs `sql` (with `body` as the data of an INSERT) on `url`; returns the response text.
  @discardableResult
  func execute(_ sql: String, body: Data? = nil, on url: String? = nil) throws -> String {
    guard let body else { return try execute(sql, bytes: nil, on: url) }
    return try body.withUnsafeBytes { try execute(sql, bytes: $0, on: url) }
  }

  /// `execute` with the insert's rows borrowed, not copied: blocks of rows are tens of MB.
  @discardableResult
  func execute(_ sql: String, bytes body: UnsafeRawBufferPointer?, on url: String? = nil, timeoutSeconds: Int = 60)
    throws -> String
  {
    let (base, authorization) = target.authorization(for: url ?? target.url)
    var components = URLComponents(string: base)
    let sqlBody = Data(sql.utf8)
    if body != nil {
      components?.queryItems = [URLQueryItem(name: "query", value: sql)]
      // Into a Distributed table, an insert returns once every shard has its rows (the default
      // queues them, and a crash would lose the queue).
      if target.cluster != nil {
        components?.queryItems?.append(URLQueryItem(name: "insert_distributed_sync", value: "1"))
      }
    }
    guard let address = components?.url, address.scheme == "http" || address.scheme == "https" else {
      throw ClickHouseStore.Failure(message: "clickhouse: bad URL \(base) (http:// or https://)")
    }
    var lastError = ""
    let connection =
      address.scheme == "http" ? connections.withLock { $0[base]?.popLast() } ?? HTTPConnection(url: address) : nil
    var reusable = true
    defer {
      if let connection, reusable { connections.withLock { $0[base, default: []].append(connection) } }
    }
    var target = address.path.isEmpty ? "/" : address.path
    if let query = address.query { target += "?" + query }
    for attempt in 0..<attempts {
      if attempt > 0 { usleep(UInt32(200_000 * (1 << (attempt - 1)))) }
      let status: Int
      let text: String
      do {
        (status, text) = try sqlBody.withUnsafeBytes { sqlBytes in
          if let connection {
            // Plain http: our own keep-alive connection.
            let response = try connection.post(
              target, body: body ?? sqlBytes, authorization: authorization, timeout: timeoutSeconds)
            return (response.status, String(decoding: response.body, as: UTF8.self))
          }
          // https: libcurl, which takes a private CA and a client certificate.
          var request = CurlClient.Request(url: address.absoluteString, body: body ?? sqlBytes)
          request.tls = self.target.tls
          request.timeoutSeconds = max(300, timeoutSeconds)
          if let authorization { request.headers.append("Authorization: \(authorization)") }
          let response = try CurlClient.perform(request)
          return (response.status, String(decoding: response.body, as: UTF8.self))
        }
      } catch let failure as CurlClient.Failure where failure.message.contains("certificate") {
        // A certificate the settings refuse stays refused: no retry.
        lastError = failure.message
        break
      } catch {
        lastError = "\(error)"
        reusable = false
        continue
      }
      if status == 200 { return text }
      lastError = "HTTP \(status): \(text.prefix(500))"
      // A statement ClickHouse rejected does not get better by repeating it, nor do refused
      // credentials (Code 192/193/516: unknown user, wrong password, authentication failed).
      if (400..<500).contains(status) || text.contains("Code: ") && !text.contains("TOO_MANY") { break }
    }
    throw ClickHouseStore.Failure(message: "clickhouse \(base): \(lastError) (\(sql.prefix(120)))")
  }
}
