import FathomKube
import FathomRecords
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
  /// Requests the connection carried (as parsed; 0 for a connection never used).
  public var requests: Int = 0

  public var packets: Int { c2sPackets + s2cPackets }
}

/// Flow records of a window counted by where they were seen, between whom and how they ended:
/// what the runbook's Service, Ingress and path steps decide on, aggregated by the store so a
/// long window costs one group per kind of connection instead of one value per flow.
public struct FlowCount: Sendable, Equatable {
  /// The node whose capture saw them.
  public var node: String
  public var interface: String
  public var observationPoint: String
  public var clientKind: String
  public var serverKind: String
  /// `namespace/name`, empty when the client is not a pod.
  public var clientPod: String
  /// `namespace/name`, empty when the connection was not to a Service.
  public var serverService: String
  public var closeType: String
  /// Whether the handshake's SYN was retransmitted.
  public var synRetransmitted: Bool
  /// Flow records (a long connection reports more than once).
  public var flows: Int
  public var packets: Int
  /// Retransmitted segments, SYNs included.
  public var retransmissions: Int
}

/// The window's flows as the runbook reads them: counted by kind, and the packets lost inside
/// each node.
public struct FlowSummary: Sendable, Equatable {
  /// In one order whatever the store (by node, observation point, Service, client, close type).
  public var counts: [FlowCount]
  /// Sorted by node.
  public var pathLoss: [NodePathLoss]

  public init(counts: [FlowCount], pathLoss: [NodePathLoss]) {
    func order(_ count: FlowCount) -> [String] {
      [
        count.node, count.observationPoint, count.interface, count.serverService, count.serverKind, count.clientPod,
        count.clientKind, count.closeType, count.synRetransmitted ? "1" : "0",
      ]
    }
    self.counts = counts.sorted { order($0).lexicographicallyPrecedes(order($1)) }
    self.pathLoss = pathLoss.sorted { $0.node < $1.node }
  }
}

/// Packets of connections seen both at a node's uplink and at one of its pods' interfaces (one
/// capture, one clock) that one of the two counted and the other did not: dropped inside the
/// node. `packets` is what the uplink counted of those connections. A connection is matched by
/// its client address and the second it started; a key with more flows on one side than the
/// other (a port reused within the second) is left out.
public struct NodePathLoss: Sendable, Equatable {
  public var node: String
  public var lostPackets: Int
  public var packets: Int
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
  /// Flow records overlapping the window, counted by kind, and per node the packets lost
  /// between its uplink and its pods (see `FlowCount`, `NodePathLoss`).
  func flowSummary(from: Int64, to: Int64) throws -> FlowSummary
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
  /// The width of the buckets SQLite's `flows_client` index leads with: the handshake lookup's
  /// window.
  static let connectBucketMicros: Int64 = 16_000_000
  /// What that index leads with (schema v9): a flow's start bucket, named in exactly this form for
  /// SQLite to use it.
  static let connectBucket = "start_us / \(connectBucketMicros)"
  /// A client's connections from one port in a window: first and last bucket, port, first and
  /// last microsecond, client IP.
  static let connectionsOfPort = """
    \(connectBucket) IN (WITH RECURSIVE bucket(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM bucket WHERE n < ?)
      SELECT n FROM bucket) AND client_port = ? AND start_us BETWEEN ? AND ? AND client_ip = ?
    """

  /// Flow columns in `FlowFact` order, ids where the record holds ids.
  static let flowColumns = """
    start_us, end_us, capture_node, interface, observation_point, client_ip, client_port, server_ip, server_port,
    client_kind, server_kind, client_pod, server_pod, server_service, close_type, c2s_packets, s2c_packets,
    retransmissions, syn_retransmissions, requests
    """

  /// Flow counts for ClickHouse (SQLite's GROUP BY sorts, slower than its scan: `SQLiteStore`
  /// counts in Swift).
  static func flowCountQuery(table: String, from: Int64, to: Int64) -> String {
    let groups =
      "capture_node, interface, observation_point, client_kind, server_kind, client_pod, server_service, close_type"
    return """
      SELECT \(groups), syn_retransmissions > 0 AS syn_retried, SUM(1), SUM(c2s_packets + s2c_packets),
        SUM(retransmissions + syn_retransmissions)
      FROM \(table) WHERE start_us <= \(to) AND end_us >= \(from) GROUP BY \(groups), syn_retried
      """
  }

  static func flowCount(_ fields: [String], name: (String) -> String) -> FlowCount? {
    guard fields.count == 12 else { return nil }
    return FlowCount(
      node: node(fields[0], name), interface: fields[1],
      observationPoint: fields[2], clientKind: fields[3], serverKind: fields[4], clientPod: name(fields[5]),
      serverService: name(fields[6]), closeType: fields[7], synRetransmitted: fields[8] == "1",
      flows: Int(fields[9]) ?? 0, packets: Int(fields[10]) ?? 0, retransmissions: Int(fields[11]) ?? 0)
  }

  /// Both directions of one connection at the uplink (`outer`) and at the pod's interface
  /// (`inner`), matched by node, client address and port (and, inbound, the server's: outbound
  /// the uplink sees the pod behind the ClusterIP) and the second it started in, so a reused
  /// client port is another connection. Inbound the uplink saw client packets the pod's
  /// interface did not, or the pod sent packets the uplink did not; outbound the other way round.
  /// (SQLite's GROUP BY sorts, slower than its scan: `SQLiteStore` does the same in Swift.)
  static func pathLossQuery(table: String, from: Int64, to: Int64) -> String {
    func positive(_ difference: String) -> String { "greatest(\(difference), 0)" }
    let legs = [
      ("s-nd", "s", "client_ip, client_port, server_ip, server_port"), ("c-nd", "c", "client_ip, client_port"),
    ]
    let parts = legs.map { outer, inner, key in
      let lost =
        outer == "s-nd"
        ? "\(positive("outer_c2s - inner_c2s")) + \(positive("inner_s2c - outer_s2c"))"
        : "\(positive("inner_c2s - outer_c2s")) + \(positive("outer_s2c - inner_s2c"))"
      func sum(_ point: String, _ column: String) -> String {
        "SUM(CASE WHEN observation_point = '\(point)' THEN \(column) ELSE 0 END)"
      }
      return """
        SELECT capture_node, SUM(\(lost)) AS lost, SUM(outer_c2s + outer_s2c) AS packets FROM (
          SELECT capture_node, \(sum(outer, "c2s_packets")) AS outer_c2s, \(sum(outer, "s2c_packets")) AS outer_s2c,
            \(sum(inner, "c2s_packets")) AS inner_c2s, \(sum(inner, "s2c_packets")) AS inner_s2c,
            \(sum(outer, "1")) AS outer_flows, \(sum(inner, "1")) AS inner_flows
          FROM \(table) WHERE start_us <= \(to) AND end_us >= \(from) AND observation_point IN ('\(outer)', '\(inner)')
          GROUP BY capture_node, \(key), start_us - start_us % 1000000)
        WHERE outer_flows > 0 AND outer_flows = inner_flows GROUP BY capture_node
        """
    }
    return parts.joined(separator: "\nUNION ALL\n")
  }

  /// The rows of `pathLossQuery` summed per node.
  static func pathLoss(_ rows: [[String]], name: (String) -> String) -> [NodePathLoss] {
    var byNode: [String: NodePathLoss] = [:]
    for fields in rows where fields.count == 3 {
      let nodeName = node(fields[0], name)
      var entry = byNode[nodeName] ?? NodePathLoss(node: nodeName, lostPackets: 0, packets: 0)
      entry.lostPackets += Int(fields[1]) ?? 0
      entry.packets += Int(fields[2]) ?? 0
      byNode[nodeName] = entry
    }
    return byNode.values.sorted { $0.node < $1.node }
  }

  static func countQuery(table: String, protocolName: String, observationPoint: String, from: Int64, to: Int64)
    -> String
  {
    """
    SELECT server_pod, code, status, count() FROM \(table) WHERE start_us >= \(from) AND start_us <= \(to)
      AND \(requestsOf(protocolName, at: observationPoint)) GROUP BY server_pod, code, status
    """
  }

  /// The condition for one protocol at one observation point, as literals (the names are
  /// reduced to the characters they are made of).
  static func requestsOf(_ protocolName: String, at observationPoint: String) -> String {
    let point = observationPoint.filter { $0.isLetter || $0 == "-" }
    return "protocol = '\(protocolName.filter { $0.isLetter || $0.isNumber })' AND observation_point = '\(point)'"
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

  /// A node's name from its id as text (nodes have no namespace).
  static func node(_ id: String, _ name: (String) -> String) -> String {
    name(id).split(separator: "/").last.map(String.init) ?? ""
  }

  static func flowFact(_ fields: [String], name: (String) -> String) -> FlowFact? {
    guard fields.count == 20 else { return nil }
    func int(_ index: Int) -> Int { Int(fields[index]) ?? 0 }
    return FlowFact(
      startMicros: Int64(fields[0]) ?? 0, endMicros: Int64(fields[1]) ?? 0,
      node: node(fields[2], name), interface: fields[3],
      observationPoint: fields[4], clientIP: fields[5], clientPort: int(6), serverIP: fields[7], serverPort: int(8),
      clientKind: fields[9], serverKind: fields[10], clientPod: name(fields[11]), serverPod: name(fields[12]),
      serverService: name(fields[13]), closeType: fields[14], c2sPackets: int(15), s2cPackets: int(16),
      retransmissions: int(17), synRetransmissions: int(18), requests: int(19))
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

  /// Through `flows_client`: one seek per 16 s bucket of the window.
  public func connections(clientIP: String, clientPort: Int, from: Int64, to: Int64) throws -> [FlowFact] {
    try flowFacts(
      where: DiagnosisSQL.connectionsOfPort,
      [
        from / DiagnosisSQL.connectBucketMicros, to / DiagnosisSQL.connectBucketMicros, clientPort, from, to, clientIP,
      ])
  }

  public func connections(clientIP: String, from: Int64, to: Int64) throws -> [FlowFact] {
    try flowFacts(where: "start_us BETWEEN ? AND ? AND client_ip = ?", [from, to, clientIP])
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
        retransmissions: columns.int(17), synRetransmissions: columns.int(18), requests: columns.int(19))
    }
  }

  public func requests(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws
    -> [StoredRequest]
  {
    // Literals, so SQLite can use a partial index written for them.
    try stored(
      "r.start_us BETWEEN ? AND ? AND \(DiagnosisSQL.requestsOf(protocolName, at: observationPoint))", [from, to])
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

  /// Whether both names are cases of their enum columns: a name outside them is an error in
  /// current ClickHouse (18.16 finds nothing), and no row can have it.
  static func storedNames(_ protocolName: String, _ observationPoint: String) -> Bool {
    ApplicationProtocol(name: protocolName) != nil && ObservationPoint(rawValue: observationPoint) != nil
  }

  public func connections(clientIP: String, from: Int64, to: Int64) throws -> [FlowFact] {
    try flowFacts(where: "start_us BETWEEN \(from) AND \(to) AND client_ip = \(Self.literal(clientIP))")
  }

  public func flowSummary(from: Int64, to: Int64) throws -> FlowSummary {
    let name = try idNames()
    let table = "\(target.database).flows"
    return FlowSummary(
      counts: try rows(DiagnosisSQL.flowCountQuery(table: table, from: from, to: to)).compactMap {
        DiagnosisSQL.flowCount($0, name: name)
      },
      pathLoss: DiagnosisSQL.pathLoss(
        try rows(DiagnosisSQL.pathLossQuery(table: table, from: from, to: to)), name: name))
  }

  public func requests(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws
    -> [StoredRequest]
  {
    guard Self.storedNames(protocolName, observationPoint) else { return [] }
    return try stored(
      "start_us BETWEEN \(from) AND \(to) AND protocol = \(Self.literal(protocolName)) AND observation_point = \(Self.literal(observationPoint))"
    )
  }

  public func requestCounts(protocolName: String, observationPoint: String, from: Int64, to: Int64) throws
    -> [RequestCount]
  {
    guard Self.storedNames(protocolName, observationPoint) else { return [] }
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
