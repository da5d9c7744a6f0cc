import FathomRecords

/// Who a flow's requests belong to: copied into every record of the flow.
struct FlowIdentity {
  var flowID: UInt64
  var clientIP: IPAddress
  var clientPort: UInt16
  var serverIP: IPAddress
  var serverPort: UInt16
  var interface: String
  var netns: String
}

/// A request waiting for its response.
struct PendingRequest {
  var startNanos: Int64
  var lastNanos: Int64
  var sequence: UInt32?
  var method = ""
  var domain = ""
  var resource = ""
  var endpoint = ""
  var version = ""
  var requestID = ""
  var traceID = ""
  var spanID = ""
  var forwardedFor = ""
  var userAgent = ""
  var bytes: UInt64 = 0
  var transactionID: UInt32?

  init(startNanos: Int64, sequence: UInt32?) {
    self.startNanos = startNanos
    self.lastNanos = startNanos
    self.sequence = sequence
  }
}

/// What a response contributes to its record.
struct ResponseInfo {
  var startNanos: Int64
  var endNanos: Int64
  var sequence: UInt32?
  var status: RequestStatus
  var code: Int32?
  var errorMessage = ""
  var requestID = ""
  var bytes: UInt64 = 0
  var version = ""
  var answers: [DNSAnswer] = []
}

/// The protocol stage's finished records, shared by every flow's sink so a record is stored once.
final class RequestBuffer {
  var records: [RequestLog] = []
}

/// Collects a flow's records (into the shared buffer) and counts, used by every parser.
struct RequestSink {
  var buffer: RequestBuffer?
  var emitted: UInt64 = 0
  var counts = ApplicationCounts()
  var parseFailures: UInt64 = 0
  /// Requests pushed out of a full pending table.
  var evicted: UInt64 = 0

  /// Counts a finished request and, when a buffer collects records, builds its RequestLog.
  mutating func emit(
    _ proto: ApplicationProtocol, _ identity: FlowIdentity, request: PendingRequest?, response: ResponseInfo?,
    status fallback: RequestStatus = .timeout
  ) {
    let status = response?.status ?? fallback
    if request != nil { counts.requests &+= 1 }
    if response != nil { counts.responses &+= 1 }
    switch status {
    case .clientError: counts.clientErrors &+= 1
    case .serverError: counts.serverErrors &+= 1
    case .timeout: counts.timeouts &+= 1
    case .unknown, .parseFailed: counts.unknown &+= 1
    case .ok: break
    }
    emitted += 1
    guard let buffer else { return }  // counts only (`fathom flows`)
    let start = request?.startNanos ?? response?.startNanos ?? 0
    let end = response?.endNanos ?? request?.lastNanos ?? start
    var duration: Int64 = 0
    if let request, let response { duration = max(0, (response.startNanos - request.startNanos) / 1000) }
    var log = RequestLog(
      startMicros: start / 1000, endMicros: end / 1000, durationMicros: duration, applicationProtocol: proto,
      clientIP: identity.clientIP, clientPort: identity.clientPort, serverIP: identity.serverIP,
      serverPort: identity.serverPort, flowID: identity.flowID)
    log.interface = identity.interface
    log.netns = identity.netns
    log.status = status
    if let request {
      log.version = request.version
      log.method = request.method
      log.domain = request.domain
      log.resource = request.resource
      log.endpoint = request.endpoint
      log.requestTCPSequence = request.sequence
      log.requestID = request.requestID
      log.traceID = request.traceID
      log.spanID = request.spanID
      log.forwardedFor = request.forwardedFor
      log.userAgent = request.userAgent
      log.requestBytes = request.bytes
      log.transactionID = request.transactionID
    }
    if let response {
      if log.version.isEmpty { log.version = response.version }
      log.code = response.code
      log.errorMessage = response.errorMessage
      log.responseTCPSequence = response.sequence
      log.responseRequestID = response.requestID
      log.responseBytes = response.bytes
      log.answers = response.answers
    }
    buffer.records.append(log)
  }
}

/// Field text from wire bytes, bounded and with invalid UTF-8 repaired.
@inline(__always) func fieldText(_ bytes: UnsafeRawBufferPointer, limit: Int) -> String {
  String(decoding: UnsafeRawBufferPointer(rebasing: bytes.prefix(limit)), as: UTF8.self)
}

@inline(__always) func fieldText(_ bytes: ArraySlice<UInt8>, limit: Int) -> String {
  String(decoding: bytes.prefix(limit), as: UTF8.self)
}

@inline(__always) func fieldText(_ bytes: Slice<UnsafeRawBufferPointer>, limit: Int) -> String {
  String(decoding: UnsafeRawBufferPointer(rebasing: bytes.prefix(limit)), as: UTF8.self)
}
