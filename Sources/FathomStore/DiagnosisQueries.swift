import Foundation
import GRDB
import GRDBSQLite

/// A flow record as the runbook reads it: tags translated to names, only the fields it decides on.
public struct FlowFact: Sendable, Equatable {
  public var startMicros: Int64
  public var endMicros: Int64
  /// The node whose capture saw it.
  public var node: String
  public var interface: String
  public var observationPoint: String
  public var clientIP: String
  public var clientPort: Int
  public var serverIP: String
  public var serverPort: Int
  public var clientKind: String
  public var serverKind: String
  /// `namespace/name`, empty when that end is not a pod or Service.
  public var clientPod: String
  public var serverPod: String
  public var serverService: String
  public var closeType: String
  public var c2sPackets: Int
  public var s2cPackets: Int
  public var retransmissions: Int
  public var synRetransmissions: Int

  public var packets: Int { c2sPackets + s2cPackets }
}

/// One 1-second (or 1-minute) rollup entry of requests measured at the server pods (`s`).
public struct ServerRollup: Sendable, Equatable {
  public var intervalStart: Int64
  public var service: String
  public var pod: String
  public var requests: Int
  public var serverErrors: Int
  public var timeouts: Int
  public var histogram: LatencyHistogram
}

/// Requests counted by the pod that answered and how (code, status).
public struct RequestCount: Sendable, Equatable {
  public var serverPod: String
  public var code: Int?
  public var status: String
  public var count: Int
}

/// What the runbook reads from a store, over a time window (µs, inclusive). Both stores answer
/// the same questions; the runbook's logic stays out of SQL, so it reads SQLite and ClickHouse
/// alike (ClickHouse 18.16's joins are too limited to share the SQL).
public protocol DiagnosisSource: TraceSource {
  /// Flow records overlapping the window.
  func flowFacts(from: Int64, to: Int64) throws -> [FlowFact]
  /// Requests of one protocol seen at one observation point, started within the window.
  func requests(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws -> [StoredRequest]
  /// Requests of one protocol at one observation point started within the window, counted by
  /// server pod, code and status.
  func requestCounts(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws
    -> [RequestCount]
  /// Server-side (`s`) request rollups whose interval starts within the window: 1 s rollups for
  /// windows up to an hour, 1 min beyond.
  func serverRollups(from: Int64, to: Int64) throws -> [ServerRollup]
  /// The first start and the last end of any stored record (µs), nil when empty.
  func recordedRange() throws -> ClosedRange<Int64>?
}

enum DiagnosisSQL {
  /// Flow columns in `FlowFact` order, ids where the record holds ids.
  static let flowColumns = """
    start_us, end_us, capture_node, interface, observation_point, client_ip, client_port, server_ip, server_port,
    client_kind, server_kind, client_pod, server_pod, server_service, close_type, c2s_packets, s2c_packets,
    retransmissions, syn_retransmissions
    """

  static func countQuery(table: String, protocolName: String, observationPoint: String, from: Int64, to: Int64)
    -> String
  {
    """
    SELECT server_pod, code, status, count() FROM \(table) WHERE start_us >= \(from) AND start_us <= \(to)
      AND protocol = '\(protocolName.filter(\.isLetter))' AND observation_point = '\(observationPoint.filter { $0.isLetter || $0 == "-" })'
    GROUP BY server_pod, code, status
    """
  }

  static func requestCount(_ fields: [String], name: (String) -> String) -> RequestCount? {
    guard fields.count == 4 else { return nil }
    let code = fields[1] == "\\N" || fields[1].isEmpty || fields[1] == "NULL" ? nil : Int(fields[1])
    return RequestCount(serverPod: name(fields[0]), code: code, status: fields[2], count: Int(fields[3]) ?? 0)
  }

  static func rollupResolution(from: Int64, to: Int64) -> Int64 { to - from <= 3_600_000_000 ? 1 : 60 }

  static func rollupQuery(table: String, from: Int64, to: Int64) -> String {
    """
    SELECT interval_start, server_service, server_pod, requests, server_errors, timeouts, histogram FROM \(table)
    WHERE observation_point = 's' AND server_service != 0 AND interval_start >= \(from / 1_000_000)
      AND interval_start <= \(to / 1_000_000)
    """
  }

  static func flowFact(_ fields: [String], name: (String) -> String) -> FlowFact? {
    guard fields.count == 19 else { return nil }
    func int(_ index: Int) -> Int { Int(fields[index]) ?? 0 }
    return FlowFact(
      startMicros: Int64(fields[0]) ?? 0, endMicros: Int64(fields[1]) ?? 0,
      node: name(fields[2]).split(separator: "/").last.map(String.init) ?? "", interface: fields[3],
      observationPoint: fields[4], clientIP: fields[5], clientPort: int(6), serverIP: fields[7], serverPort: int(8),
      clientKind: fields[9], serverKind: fields[10], clientPod: name(fields[11]), serverPod: name(fields[12]),
      serverService: name(fields[13]), closeType: fields[14], c2sPackets: int(15), s2cPackets: int(16),
      retransmissions: int(17), synRetransmissions: int(18))
  }

  static func serverRollup(_ fields: [String], name: (String) -> String) -> ServerRollup? {
    guard fields.count == 7 else { return nil }
    return ServerRollup(
      intervalStart: Int64(fields[0]) ?? 0, service: name(fields[1]), pod: name(fields[2]),
      requests: Int(fields[3]) ?? 0, serverErrors: Int(fields[4]) ?? 0, timeouts: Int(fields[5]) ?? 0,
      histogram: LatencyHistogram(encoded: fields[6]))
  }
}

extension SQLiteStore: DiagnosisSource {
  /// Rows as text fields, and the resources dictionary to translate their ids.
  func textRows(_ sql: String) throws -> (rows: [[String]], names: ResourceNames) {
    try pool.read { db in
      let names = try ResourceNames(db)
      var rows: [[String]] = []
      let cursor = try Row.fetchCursor(db, sql: sql)
      while let row = try cursor.next() {
        rows.append(
          row.databaseValues.map { value in
            switch value.storage {
            case .int64(let number): String(number)
            case .string(let text): text
            case .double(let number): String(number)
            case .null, .blob: ""
            }
          })
      }
      return (rows, names)
    }
  }

  public func connections(clientIP: String, clientPort: Int, from: Int64, to: Int64) throws -> [FlowFact] {
    try flowFacts(
      where: "start_us BETWEEN ? AND ? AND client_port = ? AND client_ip = ?", [from, to, clientPort, clientIP])
  }

  public func flowFacts(from: Int64, to: Int64) throws -> [FlowFact] {
    try flowFacts(where: "start_us <= ? AND end_us >= ?", [to, from])
  }

  /// Read with sqlite3's column API directly: a window of a long recording holds hundreds of
  /// thousands of flows, and GRDB's per-row values cost more than the query (measured on a
  /// 10-minute lab recording: 358k flows).
  func flowFacts(where clause: String, _ arguments: StatementArguments) throws -> [FlowFact] {
    try read("SELECT \(DiagnosisSQL.flowColumns) FROM flows WHERE \(clause)", arguments) { columns, names in
      FlowFact(
        startMicros: columns.int64(0), endMicros: columns.int64(1), node: names.node(columns.int64(2)),
        interface: columns.text(3), observationPoint: columns.text(4), clientIP: columns.text(5),
        clientPort: columns.int(6), serverIP: columns.text(7), serverPort: columns.int(8),
        clientKind: columns.text(9), serverKind: columns.text(10), clientPod: names.name(columns.int64(11)),
        serverPod: names.name(columns.int64(12)), serverService: names.name(columns.int64(13)),
        closeType: columns.text(14), c2sPackets: columns.int(15), s2cPackets: columns.int(16),
        retransmissions: columns.int(17), synRetransmissions: columns.int(18))
    }
  }

  public func requests(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws
    -> [StoredRequest]
  {
    try stored(
      "r.start_us BETWEEN ? AND ? AND r.protocol = ? AND r.observation_point = ?",
      [from, to, protocolName, observationPoint])
  }

  public func requestCounts(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws
    -> [RequestCount]
  {
    let sql = DiagnosisSQL.countQuery(
      table: "requests", protocolName: protocolName, observationPoint: observationPoint, from: from, to: to
    ).replacingOccurrences(of: "count()", with: "COUNT(*)")
    let (rows, names) = try textRows(sql)
    return rows.compactMap { DiagnosisSQL.requestCount($0, name: names.name(text:)) }
  }

  public func serverRollups(from: Int64, to: Int64) throws -> [ServerRollup] {
    let table = RollupSchema.table("request", DiagnosisSQL.rollupResolution(from: from, to: to))
    let (rows, names) = try textRows(DiagnosisSQL.rollupQuery(table: table, from: from, to: to))
    return rows.compactMap { DiagnosisSQL.serverRollup($0, name: names.name(text:)) }
  }

  public func recordedRange() throws -> ClosedRange<Int64>? {
    try pool.read { db in
      let row = try Row.fetchOne(
        db,
        sql: """
          SELECT MIN(first), MAX(last) FROM (SELECT MIN(start_us) AS first, MAX(end_us) AS last FROM flows
            UNION ALL SELECT MIN(start_us), MAX(end_us) FROM requests)
          """)
      guard let first: Int64 = row?[0], let last: Int64 = row?[1], first <= last else { return nil }
      return first...last
    }
  }
}

extension ClickHouseStore: DiagnosisSource {
  /// Id (as text) → name, from the resources dictionary.
  func idNames() throws -> (String) -> String {
    let names = try names()
    return { $0 == "0" ? "" : names[$0] ?? "" }
  }

  func flowFacts(where clause: String) throws -> [FlowFact] {
    let name = try idNames()
    return try rows("SELECT \(DiagnosisSQL.flowColumns) FROM \(target.database).flows WHERE \(clause)").compactMap {
      DiagnosisSQL.flowFact($0, name: name)
    }
  }

  public func connections(clientIP: String, clientPort: Int, from: Int64, to: Int64) throws -> [FlowFact] {
    try flowFacts(
      where:
        "start_us BETWEEN \(from) AND \(to) AND client_port = \(clientPort) AND client_ip = \(Self.literal(clientIP))")
  }

  public func flowFacts(from: Int64, to: Int64) throws -> [FlowFact] {
    try flowFacts(where: "start_us <= \(to) AND end_us >= \(from)")
  }

  public func requests(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws
    -> [StoredRequest]
  {
    try stored(
      "start_us BETWEEN \(from) AND \(to) AND protocol = \(Self.literal(protocolName)) AND observation_point = \(Self.literal(observationPoint))"
    )
  }

  public func requestCounts(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws
    -> [RequestCount]
  {
    let name = try idNames()
    return try rows(
      DiagnosisSQL.countQuery(
        table: "\(target.database).requests", protocolName: protocolName, observationPoint: observationPoint,
        from: from, to: to)
    ).compactMap { DiagnosisSQL.requestCount($0, name: name) }
  }

  public func serverRollups(from: Int64, to: Int64) throws -> [ServerRollup] {
    let name = try idNames()
    let table = "\(target.database).\(RollupSchema.table("request", DiagnosisSQL.rollupResolution(from: from, to: to)))"
    return try rows(DiagnosisSQL.rollupQuery(table: table, from: from, to: to)).compactMap {
      DiagnosisSQL.serverRollup($0, name: name)
    }
  }

  public func recordedRange() throws -> ClosedRange<Int64>? {
    let db = target.database
    let row = try rows(
      "SELECT min(first), max(last) FROM (SELECT min(start_us) AS first, max(end_us) AS last FROM \(db).flows UNION ALL SELECT min(start_us), max(end_us) FROM \(db).requests) WHERE last > 0"
    ).first
    guard let row, row.count == 2, let first = Int64(row[0]), let last = Int64(row[1]), first > 0, first <= last
    else { return nil }
    return first...last
  }
}
