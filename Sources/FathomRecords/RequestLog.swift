/// Application protocols Fathom parses.
public enum ApplicationProtocol: UInt8, Sendable, CaseIterable {
  case http, http2, grpc, dns, redis

  public var name: StaticString {
    switch self {
    case .http: "http"
    case .http2: "http2"
    case .grpc: "grpc"
    case .dns: "dns"
    case .redis: "redis"
    }
  }

  public var description: String { name.description }

  public init?(name: String) {
    guard let match = Self.allCases.first(where: { $0.description == name }) else { return nil }
    self = match
  }
}

/// How a request ended (REFERENCE.md, "Application requests").
public enum RequestStatus: UInt8, Sendable, CaseIterable {
  case ok, clientError, serverError, timeout, unknown, parseFailed

  public var name: StaticString {
    switch self {
    case .ok: "ok"
    case .clientError: "client_error"
    case .serverError: "server_error"
    case .timeout: "timeout"
    case .unknown: "unknown"
    case .parseFailed: "parse_failed"
    }
  }
}

/// One DNS resource record of an answer.
public struct DNSAnswer: Sendable, Equatable {
  /// Record type name (A, AAAA, CNAME, SRV, PTR, ...) or TYPEnnn.
  public var type: String
  /// Presentation form of the data: an address, a name, "prio weight port target", ...
  public var value: String
  public var ttl: UInt32

  public init(type: String, value: String, ttl: UInt32) {
    self.type = type
    self.value = value
    self.ttl = ttl
  }
}

/// One request and its response (or a lone request that timed out, or a lone response): the
/// contract between the protocol stage and everything after it. Fields in docs/records.md.
public struct RequestLog: Sendable {
  public var startMicros: Int64
  public var endMicros: Int64
  /// Response's first byte − request's first byte (DeepFlow's rrt); 0 when either is missing.
  public var durationMicros: Int64
  public var applicationProtocol: ApplicationProtocol
  public var clientIP: IPAddress
  public var clientPort: UInt16
  public var serverIP: IPAddress
  public var serverPort: UInt16
  public var flowID: UInt64
  public var status: RequestStatus = .ok
  /// HTTP status, DNS rcode, gRPC status (when present), Redis: nil.
  public var code: Int32?
  /// TCP sequence numbers of the request's and the response's first payload byte.
  public var requestTCPSequence: UInt32?
  public var responseTCPSequence: UInt32?
  public var requestBytes: UInt64 = 0
  public var responseBytes: UInt64 = 0
  /// DNS transaction id, HTTP/2 stream id.
  public var transactionID: UInt32?
  public var answers: [DNSAnswer] = []
  /// The text fields below, in one buffer (see RequestTexts for why).
  public var texts = RequestTexts()

  /// "1.0", "1.1", "2"; empty when the protocol has no version on the wire.
  public var version: String {
    get { texts[.version] }
    set { texts[.version] = newValue }
  }
  public var interface: String {
    get { texts[.interface] }
    set { texts[.interface] = newValue }
  }
  public var netns: String {
    get { texts[.netns] }
    set { texts[.netns] = newValue }
  }
  /// HTTP method, DNS query type, Redis command.
  public var method: String {
    get { texts[.method] }
    set { texts[.method] = newValue }
  }
  /// HTTP Host / :authority, DNS question name.
  public var domain: String {
    get { texts[.domain] }
    set { texts[.domain] = newValue }
  }
  /// HTTP path, DNS question name, Redis key.
  public var resource: String {
    get { texts[.resource] }
    set { texts[.resource] = newValue }
  }
  /// gRPC service/method, HTTP path without query.
  public var endpoint: String {
    get { texts[.endpoint] }
    set { texts[.endpoint] = newValue }
  }
  /// Redis error reply, HTTP reason of an error, ...
  public var errorMessage: String {
    get { texts[.errorMessage] }
    set { texts[.errorMessage] = newValue }
  }
  public var requestID: String {
    get { texts[.requestID] }
    set { texts[.requestID] = newValue }
  }
  public var responseRequestID: String {
    get { texts[.responseRequestID] }
    set { texts[.responseRequestID] = newValue }
  }
  public var traceID: String {
    get { texts[.traceID] }
    set { texts[.traceID] = newValue }
  }
  public var spanID: String {
    get { texts[.spanID] }
    set { texts[.spanID] = newValue }
  }
  public var forwardedFor: String {
    get { texts[.forwardedFor] }
    set { texts[.forwardedFor] = newValue }
  }
  public var userAgent: String {
    get { texts[.userAgent] }
    set { texts[.userAgent] = newValue }
  }

  public init(
    startMicros: Int64, endMicros: Int64, durationMicros: Int64, applicationProtocol: ApplicationProtocol,
    clientIP: IPAddress, clientPort: UInt16, serverIP: IPAddress, serverPort: UInt16, flowID: UInt64
  ) {
    self.startMicros = startMicros
    self.endMicros = endMicros
    self.durationMicros = durationMicros
    self.applicationProtocol = applicationProtocol
    self.clientIP = clientIP
    self.clientPort = clientPort
    self.serverIP = serverIP
    self.serverPort = serverPort
    self.flowID = flowID
  }
}

extension OutputBuffer {
  /// The bytes of a request's JSON line other than its texts and answers, at most: literals
  /// (at most 552 bytes), twelve numbers of up to 20 characters, two IPv6 addresses, two names.
  static let requestLineBound = 1024

  /// Appends each record as a JSON line. Records are read where they lie: a record loaded from
  /// memory to be passed on, even as `borrowing`, was copied (a retain and release of its buffers).
  public mutating func appendJSONLines(_ requests: UnsafeBufferPointer<RequestLog>) {
    guard let base = requests.baseAddress else { return }
    for index in requests.indices { appendJSONLine(at: base + index) }
  }

  /// Appends one RequestLog as a JSON object on one line.
  public mutating func appendJSONLine(_ request: borrowing RequestLog) {
    withUnsafePointer(to: request) { appendJSONLine(at: $0) }
  }

  private mutating func appendJSONLine(at request: UnsafePointer<RequestLog>) {
    // The record stays in place for the whole call, so its text buffer outlives these views.
    let text = request.pointee.texts.unsafeFields
    // Room for all but the answers at once (the answers come after, checked).
    appendReserving(Self.requestLineBound + text.jsonBound) { line in
      line.literal("{\"start_us\":")
      line.decimal(request.pointee.startMicros)
      line.literal(",\"end_us\":")
      line.decimal(request.pointee.endMicros)
      line.literal(",\"duration_us\":")
      line.decimal(request.pointee.durationMicros)
      line.literal(",\"protocol\":\"")
      line.literal(request.pointee.applicationProtocol.name)
      line.literal("\",\"version\":")
      line.jsonString(text[.version])
      line.literal(",\"client_ip\":\"")
      line.address(request.pointee.clientIP)
      line.literal("\",\"client_port\":")
      line.decimal(UInt64(request.pointee.clientPort))
      line.literal(",\"server_ip\":\"")
      line.address(request.pointee.serverIP)
      line.literal("\",\"server_port\":")
      line.decimal(UInt64(request.pointee.serverPort))
      if text.isEmpty(.interface) && text.isEmpty(.netns) {
        line.literal(",\"interface\":\"\",\"netns\":\"\"")  // a capture file's records: one copy
      } else {
        line.field(",\"interface\":", text[.interface])
        line.field(",\"netns\":", text[.netns])
      }
      line.literal(",\"flow_id\":")
      line.decimal(request.pointee.flowID)
      line.field(",\"method\":", text[.method])
      line.field(",\"domain\":", text[.domain])
      line.field(",\"resource\":", text[.resource])
      line.field(",\"endpoint\":", text[.endpoint])
      line.literal(",\"status\":\"")
      line.literal(request.pointee.status.name)
      line.field("\",\"code\":", request.pointee.code.map(Int64.init))
      line.field(",\"error\":", text[.errorMessage])
      line.field(",\"req_tcp_seq\":", request.pointee.requestTCPSequence.map(UInt64.init))
      line.field(",\"resp_tcp_seq\":", request.pointee.responseTCPSequence.map(UInt64.init))
      if text.isEmpty(.requestID) && text.isEmpty(.responseRequestID) && text.isEmpty(.traceID)
        && text.isEmpty(.spanID) && text.isEmpty(.forwardedFor) && text.isEmpty(.userAgent)
      {
        // Requests without tracing headers (DNS, Redis, most HTTP): the empty run in one copy.
        line.literal(
          ",\"x_request_id_req\":\"\",\"x_request_id_resp\":\"\",\"trace_id\":\"\",\"span_id\":\"\",\"x_forwarded_for\":\"\",\"user_agent\":\"\""
        )
      } else {
        line.field(",\"x_request_id_req\":", text[.requestID])
        line.field(",\"x_request_id_resp\":", text[.responseRequestID])
        line.field(",\"trace_id\":", text[.traceID])
        line.field(",\"span_id\":", text[.spanID])
        line.field(",\"x_forwarded_for\":", text[.forwardedFor])
        line.field(",\"user_agent\":", text[.userAgent])
      }
      line.literal(",\"req_bytes\":")
      line.decimal(request.pointee.requestBytes)
      line.literal(",\"resp_bytes\":")
      line.decimal(request.pointee.responseBytes)
      line.field(",\"transaction_id\":", request.pointee.transactionID.map(UInt64.init))
    }
    append(",\"answers\":[")
    for (index, answer) in request.pointee.answers.enumerated() {
      if index > 0 { append(byte: UInt8(ascii: ",")) }
      append("{\"type\":")
      appendJSONString(answer.type)
      append(",\"value\":")
      appendJSONString(answer.value)
      append(",\"ttl\":")
      append(UInt64(answer.ttl))
      append("}")
    }
    append("]}\n")
  }
}

/// Writes RequestLogs as an aligned human table.
public enum RequestTable {
  public static let header =
    "PROTO  CLIENT                 SERVER                 METHOD    DOMAIN                             RESOURCE                                  STATUS        CODE   DURATION ms\n"

  public static func appendRow(_ request: RequestLog, to out: inout OutputBuffer) {
    out.appendPadded(request.applicationProtocol.description, width: 7)
    out.appendPaddedEndpoint(request.clientIP, request.clientPort, width: 23)
    out.appendPaddedEndpoint(request.serverIP, request.serverPort, width: 23)
    out.appendPadded(request.method, width: 10)
    out.appendPadded(request.domain, width: 35)
    out.appendPadded(request.resource, width: 42)
    out.appendPadded(request.status.name.description, width: 14)
    out.appendPadded(request.code.map { "\($0)" } ?? "-", width: 6)
    out.appendPadded(TableCell.millis(request.durationMicros), width: 12, alignRight: true)
    out.append(byte: 10)
  }
}
