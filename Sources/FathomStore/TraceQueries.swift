import FathomKube
import Foundation
import GRDB
import GRDBSQLite

/// A stored request with its tags translated to names: what trace assembly works on.
public struct StoredRequest: Sendable, Equatable {
  public var id: Int64
  public var startMicros: Int64
  public var durationMicros: Int64
  public var protocolName: String
  public var method: String
  public var domain: String
  public var resource: String
  public var status: String
  public var code: Int?
  public var clientIP: String
  public var clientPort: Int
  public var serverIP: String
  public var serverPort: Int
  public var observationPoint: String
  public var node: String
  public var interface: String
  /// `namespace/name`, empty when that end is not a pod.
  public var clientPod: String
  public var serverPod: String
  public var serverService: String
  public var serverKind: String
  public var xRequestID: String
  public var traceID: String
  public var requestSequence: Int64?
  public var responseSequence: Int64?
  /// DNS answers, `TYPE value` per line.
  public var answers: String

  public var endMicros: Int64 { startMicros + durationMicros }

  public init(
    id: Int64, startMicros: Int64, durationMicros: Int64, protocolName: String, method: String = "",
    domain: String = "",
    resource: String = "", status: String = "ok", code: Int? = nil, clientIP: String, clientPort: Int, serverIP: String,
    serverPort: Int, observationPoint: String, node: String = "", interface: String = "", clientPod: String = "",
    serverPod: String = "", serverService: String = "", serverKind: String = "", xRequestID: String = "",
    traceID: String = "", requestSequence: Int64? = nil, responseSequence: Int64? = nil, answers: String = ""
  ) {
    self.id = id
    self.startMicros = startMicros
    self.durationMicros = durationMicros
    self.protocolName = protocolName
    self.method = method
    self.domain = domain
    self.resource = resource
    self.status = status
    self.code = code
    self.clientIP = clientIP
    self.clientPort = clientPort
    self.serverIP = serverIP
    self.serverPort = serverPort
    self.observationPoint = observationPoint
    self.node = node
    self.interface = interface
    self.clientPod = clientPod
    self.serverPod = serverPod
    self.serverService = serverService
    self.serverKind = serverKind
    self.xRequestID = xRequestID
    self.traceID = traceID
    self.requestSequence = requestSequence
    self.responseSequence = responseSequence
    self.answers = answers
  }
}

/// What trace assembly asks of a store.
public protocol TraceSource {
  /// Every request carrying this X-Request-ID (in the request or the response).
  func requests(xRequestID: String) throws -> [StoredRequest]
  func requests(traceID: String) throws -> [StoredRequest]
  func request(id: Int64) throws -> StoredRequest?
  /// The same request at other observation points: equal request sequence number, near in time.
  func requests(requestSequence: Int64, from: Int64, to: Int64) throws -> [StoredRequest]
  /// Requests a client (by IP) sent within a time range, of one protocol (DNS lookups, Redis calls).
  func requests(clientIP: String, protocolName: String, from: Int64, to: Int64) throws -> [StoredRequest]
  /// Candidates for `fathom traces`: HTTP, HTTP/2 and gRPC requests to a Service at its pods
  /// (the protocols that carry request and trace IDs), newest first.
  func candidates(service: String, onlyErrors: Bool, slowerThanMicros: Int64?, since: Int64, limit: Int) throws
    -> [StoredRequest]
  /// The connections (flow records) from one client address and port that started within a
  /// time range: the handshake before a request.
  func connections(clientIP: String, clientPort: Int, from: Int64, to: Int64) throws -> [FlowFact]
  /// The connections from one client address that started within a time range: what a server
  /// tried to call while it served a request.
  func connections(clientIP: String, from: Int64, to: Int64) throws -> [FlowFact]
}

extension SQLiteStore: TraceSource {
  /// Ids, not names: names come from the resources dictionary in memory (joining four
  /// dictionary lookups per row cost more than the rest of the query).
  static let selectStored = """
    SELECT r.rowid, r.start_us, r.duration_us, r.protocol, r.method, r.domain, r.resource, r.status, r.code,
      r.client_ip, r.client_port, r.server_ip, r.server_port, r.observation_point, r.capture_node, r.interface,
      r.client_pod, r.server_pod, r.server_service, r.server_kind,
      CASE WHEN r.x_request_id_req != '' THEN r.x_request_id_req ELSE r.x_request_id_resp END,
      r.trace_id, r.req_tcp_seq, r.resp_tcp_seq, r.answers
    FROM requests r
    """

  /// Rows of `selectStored`.
  func stored(_ whereClause: String, _ arguments: StatementArguments) throws -> [StoredRequest] {
    try read("\(Self.selectStored) WHERE \(whereClause)", arguments) { columns, names in
      StoredRequest(
        id: columns.int64(0), startMicros: columns.int64(1), durationMicros: columns.int64(2),
        protocolName: columns.text(3), method: columns.text(4), domain: columns.text(5),
        resource: columns.text(6), status: columns.text(7), code: columns.optionalInt(8),
        clientIP: columns.text(9), clientPort: columns.int(10), serverIP: columns.text(11),
        serverPort: columns.int(12), observationPoint: columns.text(13), node: names.node(columns.int64(14)),
        interface: columns.text(15), clientPod: names.name(columns.int64(16)),
        serverPod: names.name(columns.int64(17)), serverService: names.name(columns.int64(18)),
        serverKind: columns.text(19), xRequestID: columns.text(20), traceID: columns.text(21),
        requestSequence: columns.optionalInt(22).map(Int64.init),
        responseSequence: columns.optionalInt(23).map(Int64.init), answers: columns.text(24))
    }
  }

  /// The ID as the request carried it, or only in the response (what `RequestKeys` filed).
  public func requests(xRequestID: String) throws -> [StoredRequest] {
    try lookup(
      .requestID, xRequestID,
      "(r.x_request_id_req = ? OR (r.x_request_id_req = '' AND r.x_request_id_resp = ?))", [xRequestID, xRequestID])
  }

  public func requests(traceID: String) throws -> [StoredRequest] {
    try lookup(.traceID, traceID, "r.trace_id = ?", [traceID])
  }

  public func request(id: Int64) throws -> StoredRequest? { try stored("r.rowid = ?", [id]).first }

  /// Through the time index: trace assembly asks within ±60 ms of a request.
  public func requests(requestSequence: Int64, from: Int64, to: Int64) throws -> [StoredRequest] {
    try stored("r.start_us BETWEEN ? AND ? AND r.req_tcp_seq = ?", [from, to, requestSequence])
  }

  /// The requests filed under `key` in `request_keys` where `condition` holds: the key's bucket
  /// in every lookup block (one seek each), then the requests at the start times of its hash's
  /// entries (through the time index), where `condition` compares the key itself.
  func lookup(_ kind: RequestKeys.Kind, _ key: String, _ condition: String, _ arguments: StatementArguments) throws
    -> [StoredRequest]
  {
    guard !key.isEmpty else { return [] }
    let hash = RequestKeys.hash(kind, key)
    let starts = try pool.read { db -> Set<Int64> in
      guard let last = try Int64.fetchOne(db, sql: TraceSQL.lastLookupBlock) else { return [] }
      var starts = Set<Int64>()
      let rows = try Row.fetchCursor(
        db, sql: "SELECT entries FROM request_keys WHERE \(TraceSQL.blocks) AND bucket = ?",
        arguments: [last, RequestKeys.bucket(hash)])
      while let row = try rows.next() {
        let entries: Data = row[0]
        entries.withUnsafeBytes { starts.formUnion(RequestKeys.starts(matching: hash, in: $0)) }
      }
      return starts
    }
    // In pieces well under SQLite's 32,766 parameters (a trace id may be on thousands of requests).
    var found: [StoredRequest] = []
    let sorted = starts.sorted()
    for first in stride(from: 0, to: sorted.count, by: 1_000) {
      let piece = sorted[first..<Swift.min(first + 1_000, sorted.count)]
      var pieceArguments = StatementArguments(piece)
      pieceArguments += arguments
      found += try stored(
        "r.start_us IN (\(Array(repeating: "?", count: piece.count).joined(separator: ","))) AND \(condition)",
        pieceArguments)
    }
    return found
  }

  public func requests(clientIP: String, protocolName: String, from: Int64, to: Int64) throws -> [StoredRequest] {
    try stored("r.start_us BETWEEN ? AND ? AND r.client_ip = ? AND r.protocol = ?", [from, to, clientIP, protocolName])
  }

  public func candidates(service: String, onlyErrors: Bool, slowerThanMicros: Int64?, since: Int64, limit: Int) throws
    -> [StoredRequest]
  {
    let parts = service.split(separator: "/").map(String.init)
    guard parts.count == 2 else { return [] }
    var clause = """
      r.server_service = (SELECT id FROM resources WHERE kind = 'service' AND namespace = ? AND name = ?)
        AND r.protocol IN \(TraceSQL.rootProtocols) AND r.observation_point = 's' AND r.start_us >= ?
      """
    var arguments: StatementArguments = [parts[0], parts[1], since]
    if onlyErrors { clause += " AND r.status != 'ok'" }
    if let slowerThanMicros {
      clause += " AND r.duration_us > ?"
      _ = arguments.append(contentsOf: [slowerThanMicros])
    }
    return try stored(clause + " ORDER BY r.start_us DESC LIMIT \(max(1, limit))", arguments)
  }
}

enum TraceSQL {
  /// Requests a trace starts from.
  static let rootProtocols = "('http', 'http2', 'grpc')"
  /// The rows each lookup index held (partial indexes, schema v7 to v9; migrations only).
  static let hasRequestID = "x_request_id_req != ''"
  static let hasOnlyResponseID = "x_request_id_req = '' AND x_request_id_resp != ''"
  static let hasTraceID = "trace_id != ''"
  /// The rows of v7's sequence-number index (dropped in v8).
  static let hasSequence = "req_tcp_seq IS NOT NULL"

  /// (name, key column, the rows it holds) of each lookup index; v8 leads them with `lookup_block`,
  /// v10 replaces them with `request_keys` (migrations only).
  static let lookupIndexes = [
    ("requests_x_request_id", "x_request_id_req", hasRequestID),
    ("requests_x_request_id_resp", "x_request_id_resp", hasOnlyResponseID),
    ("requests_trace_id", "trace_id", hasTraceID),
  ]

  /// The last lookup block of `request_keys` (a seek to its index's end).
  static let lastLookupBlock = "SELECT max(lookup_block) FROM request_keys"

  /// Every lookup block from 0 to the one bound (with which `request_keys_block` seeks a bucket
  /// once per block).
  static let blocks = """
    lookup_block IN (WITH RECURSIVE block(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM block WHERE n < ?)
      SELECT n FROM block)
    """
}
