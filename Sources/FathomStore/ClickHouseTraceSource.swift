import FathomRecords
import Foundation

/// ClickHouse as a trace source: the same lookups as SQLite's, with ids translated through the
/// resources dictionary in memory (18.16's joins are too limited to do it in SQL). A request's id
/// is a hash of the columns that make it unique, as ClickHouse has no row ids.
extension ClickHouseStore: TraceSource {
  /// A request's id. Over names, not `Enum8` codes (what `cityHash64` of an enum hashes is the
  /// server's choice): ids stay what they were while String columns became enums.
  static let requestIDExpression = """
    cityHash64(source_id, start_us, client_ip, client_port, toString(observation_point), capture_node, \
    toString(protocol), method, domain)
    """

  static let storedColumns = """
    \(requestIDExpression),
    start_us, duration_us, protocol, method, domain, resource, status, code, client_ip, client_port, server_ip,
    server_port, observation_point, capture_node, interface, client_pod, server_pod, server_service, server_kind,
    hex(x_request_id_req), hex(x_request_id_resp), hex(trace_id), req_tcp_seq, resp_tcp_seq, answers
    """

  func names() throws -> [String: String] {
    var names: [String: String] = [:]
    for row in try rows("SELECT id, namespace, name FROM \(target.database).resources FINAL") where row.count == 3 {
      names[row[0]] = row[1].isEmpty ? row[2] : "\(row[1])/\(row[2])"
    }
    return names
  }

  func stored(_ whereClause: String) throws -> [StoredRequest] {
    let names = try names()
    func name(_ id: String) -> String { id == "0" ? "" : names[id] ?? "" }
    func optional(_ text: String) -> Int64? { text == "\\N" ? nil : Int64(text) }
    return try rows("SELECT \(Self.storedColumns) FROM \(target.database).requests WHERE \(whereClause)").compactMap {
      row in
      guard row.count == 26 else { return nil }
      return StoredRequest(
        id: Int64(bitPattern: UInt64(row[0]) ?? 0), startMicros: Int64(row[1]) ?? 0, durationMicros: Int64(row[2]) ?? 0,
        protocolName: row[3], method: row[4], domain: row[5], resource: row[6], status: row[7],
        code: optional(row[8]).map { Int($0) }, clientIP: row[9], clientPort: Int(row[10]) ?? 0, serverIP: row[11],
        serverPort: Int(row[12]) ?? 0, observationPoint: row[13],
        node: names[row[14]].map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "", interface: row[15],
        clientPod: name(row[16]), serverPod: name(row[17]), serverService: name(row[18]), serverKind: row[19],
        xRequestID: StoredIdentifier.decode(hex: row[20].isEmpty ? row[21] : row[20]),
        traceID: StoredIdentifier.decode(hex: row[22]), requestSequence: optional(row[23]),
        responseSequence: optional(row[24]), answers: row[25])
    }
  }

  static func literal(_ text: String) -> String {
    "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
  }

  public func requests(xRequestID: String) throws -> [StoredRequest] {
    let forms = StoredIdentifier.literals(xRequestID)
    return try stored(
      "x_request_id_req IN \(forms) OR (x_request_id_req = '' AND x_request_id_resp IN \(forms))"
    )
  }

  public func requests(traceID: String) throws -> [StoredRequest] {
    try stored("trace_id IN \(StoredIdentifier.literals(traceID))")
  }

  public func request(id: Int64) throws -> StoredRequest? {
    try stored(
      "\(Self.requestIDExpression) = \(UInt64(bitPattern: id))"
    ).first
  }

  public func requests(requestSequence: Int64, from: Int64, to: Int64) throws -> [StoredRequest] {
    try stored("req_tcp_seq = \(requestSequence) AND start_us BETWEEN \(from) AND \(to)")
  }

  public func requests(clientIP: String, protocolName: String, from: Int64, to: Int64) throws -> [StoredRequest] {
    // A name outside an enum column's cases is an error in current ClickHouse, and no row has it.
    guard ApplicationProtocol(name: protocolName) != nil else { return [] }
    return try stored(
      "start_us BETWEEN \(from) AND \(to) AND client_ip = \(Self.literal(clientIP)) AND protocol = \(Self.literal(protocolName))"
    )
  }

  public func candidates(service: String, onlyErrors: Bool, slowerThanMicros: Int64?, since: Int64, limit: Int) throws
    -> [StoredRequest]
  {
    let parts = service.split(separator: "/").map(String.init)
    guard parts.count == 2,
      let id = try rows(
        "SELECT id FROM \(target.database).resources FINAL WHERE kind = 'service' AND namespace = \(Self.literal(parts[0])) AND name = \(Self.literal(parts[1]))"
      ).first?.first
    else { return [] }
    var clause =
      "server_service = \(id) AND protocol IN \(TraceSQL.rootProtocols) AND observation_point = 's' AND start_us >= \(since)"
    if onlyErrors { clause += " AND status != 'ok'" }
    if let slowerThanMicros { clause += " AND duration_us > \(slowerThanMicros)" }
    return try stored(clause + " ORDER BY start_us DESC LIMIT \(max(1, limit))")
  }
}
