import FathomKube
import Foundation
import GRDB

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
  /// Candidates for `fathom traces`: requests to a Service at its pods, newest first.
  func candidates(service: String, onlyErrors: Bool, slowerThanMicros: Int64?, since: Int64, limit: Int) throws
    -> [StoredRequest]
  /// The connections (flow records) from one client address and port that started within a
  /// time range: the handshake before a request.
  func connections(clientIP: String, clientPort: Int, from: Int64, to: Int64) throws -> [FlowFact]
}

extension SQLiteStore: TraceSource {
  static let selectStored = """
    SELECT r.rowid AS id, r.start_us, r.duration_us, r.protocol, r.method, r.domain, r.resource, r.status, r.code,
      r.client_ip, r.client_port, r.server_ip, r.server_port, r.observation_point,
      COALESCE(n.name, '') AS node, r.interface,
      COALESCE(cp.namespace || '/' || cp.name, '') AS client_pod, COALESCE(sp.namespace || '/' || sp.name, '') AS server_pod,
      COALESCE(ss.namespace || '/' || ss.name, '') AS server_service, r.server_kind,
      CASE WHEN r.x_request_id_req != '' THEN r.x_request_id_req ELSE r.x_request_id_resp END AS x_request_id,
      r.trace_id, r.req_tcp_seq, r.resp_tcp_seq, r.answers
    FROM requests r
      LEFT JOIN resources n ON n.id = r.capture_node AND r.capture_node != 0
      LEFT JOIN resources cp ON cp.id = r.client_pod AND r.client_pod != 0
      LEFT JOIN resources sp ON sp.id = r.server_pod AND r.server_pod != 0
      LEFT JOIN resources ss ON ss.id = r.server_service AND r.server_service != 0
    """

  func stored(_ whereClause: String, _ arguments: StatementArguments) throws -> [StoredRequest] {
    try pool.read { db in
      try Row.fetchAll(db, sql: "\(Self.selectStored) WHERE \(whereClause)", arguments: arguments).map { row in
        StoredRequest(
          id: row["id"], startMicros: row["start_us"], durationMicros: row["duration_us"],
          protocolName: row["protocol"],
          method: row["method"], domain: row["domain"], resource: row["resource"], status: row["status"],
          code: row["code"],
          clientIP: row["client_ip"], clientPort: row["client_port"], serverIP: row["server_ip"],
          serverPort: row["server_port"], observationPoint: row["observation_point"], node: row["node"],
          interface: row["interface"], clientPod: row["client_pod"], serverPod: row["server_pod"],
          serverService: row["server_service"], serverKind: row["server_kind"], xRequestID: row["x_request_id"],
          traceID: row["trace_id"], requestSequence: row["req_tcp_seq"], responseSequence: row["resp_tcp_seq"],
          answers: row["answers"])
      }
    }
  }

  public func requests(xRequestID: String) throws -> [StoredRequest] {
    // Two indexed lookups: the ID as the request carried it, or only in the response.
    try stored("r.x_request_id_req = ?", [xRequestID])
      + stored("r.x_request_id_resp = ? AND r.x_request_id_req = ''", [xRequestID])
  }

  public func requests(traceID: String) throws -> [StoredRequest] { try stored("r.trace_id = ?", [traceID]) }

  public func request(id: Int64) throws -> StoredRequest? { try stored("r.rowid = ?", [id]).first }

  public func requests(requestSequence: Int64, from: Int64, to: Int64) throws -> [StoredRequest] {
    try stored("r.req_tcp_seq = ? AND r.start_us BETWEEN ? AND ?", [requestSequence, from, to])
  }

  public func requests(clientIP: String, protocolName: String, from: Int64, to: Int64) throws -> [StoredRequest] {
    try stored("r.start_us BETWEEN ? AND ? AND r.client_ip = ? AND r.protocol = ?", [from, to, clientIP, protocolName])
  }

  public func candidates(service: String, onlyErrors: Bool, slowerThanMicros: Int64?, since: Int64, limit: Int) throws
    -> [StoredRequest]
  {
    let parts = service.split(separator: "/").map(String.init)
    guard parts.count == 2 else { return [] }
    var clause = "ss.namespace = ? AND ss.name = ? AND r.observation_point = 's' AND r.start_us >= ?"
    var arguments: StatementArguments = [parts[0], parts[1], since]
    if onlyErrors { clause += " AND r.status != 'ok'" }
    if let slowerThanMicros {
      clause += " AND r.duration_us > ?"
      _ = arguments.append(contentsOf: [slowerThanMicros])
    }
    return try stored(clause + " ORDER BY r.start_us DESC LIMIT \(max(1, limit))", arguments)
  }
}
