import FathomRecords

/// Who a flow's requests belong to: copied into every record of the flow.
struct FlowIdentity {
  var flowID: UInt64
  var clientIP: IPAddress
  var clientPort: UInt16
  var serverIP: IPAddress
  var serverPort: UInt16
  /// Index of the capture point (its interface and netns texts are in the RequestBuffer).
  var capturePoint: UInt32
}

/// A request waiting for its response. Its texts become the record's (moved, not copied).
struct PendingRequest {
  var startNanos: Int64
  var lastNanos: Int64
  var sequence: UInt32?
  var texts = RequestTexts()
  var bytes: UInt64 = 0
  var transactionID: UInt32?
  /// HTTP/1: whether the answer is framed as HEAD's or CONNECT's.
  var framing = HTTP1Parser.FramingMethod.other

  init(startNanos: Int64, sequence: UInt32?, texts: RequestTexts = RequestTexts()) {
    self.startNanos = startNanos
    self.lastNanos = startNanos
    self.sequence = sequence
    self.texts = texts
  }
}

extension Array where Element == PendingRequest {
  /// The request at `index`, taken out. The last one — nearly always the only one — is a plain
  /// move from the end; `removeFirst` and `remove(at:)` went through the general removal every
  /// time.
  mutating func take(at index: Int) -> PendingRequest {
    index == count - 1 ? removeLast() : remove(at: index)
  }

  /// The oldest request (requests wait in the order they were sent), taken out.
  mutating func takeOldest() -> PendingRequest { take(at: 0) }
}

/// What a response contributes to its record. Its texts use the record's fields: `.version`,
/// `.errorMessage`, and `.responseRequestID` for the response's X-Request-ID.
struct ResponseInfo {
  var startNanos: Int64
  var endNanos: Int64
  var sequence: UInt32?
  var status: RequestStatus
  var code: Int32?
  var texts = RequestTexts()
  var bytes: UInt64 = 0
  var answers: [DNSAnswer] = []
}

/// The protocol stage's finished records, shared by every flow's sink so a record is stored once.
final class RequestBuffer {
  var records: [RequestLog] = []
  /// Text buffers of records already handed on (`RequestMeter.drain`), for new ones.
  var spareTexts = RequestTexts.Spares()
  /// Each capture point's interface and netns, as texts to copy into its records.
  var capturePoints: [RequestTexts] = []
}

/// Collects a flow's records (into the shared buffer) and counts, used by every parser.
struct RequestSink {
  var buffer: RequestBuffer?
  var emitted: UInt64 = 0
  var counts = ApplicationCounts()
  var parseFailures: UInt64 = 0
  /// Requests pushed out of a full pending table.
  var evicted: UInt64 = 0

  /// Whether records are built (else only counted): parsers skip their texts when not.
  var keepsRecords: Bool { buffer != nil }

  /// Empty texts for a new request or response, on a spare buffer when there is one.
  func newTexts() -> RequestTexts { buffer?.spareTexts.take() ?? RequestTexts() }

  /// A finished request, either half possibly missing: dispatches to the forms below.
  mutating func emit(
    _ proto: ApplicationProtocol, _ identity: FlowIdentity, request: __owned PendingRequest?,
    response: __owned ResponseInfo?, status fallback: RequestStatus = .timeout
  ) {
    switch (request, response) {
    case (var request?, var response?): emit(proto, identity, request: &request, response: &response)
    case (var request?, nil): emit(proto, identity, request: &request, status: fallback)
    case (nil, var response?): emit(proto, identity, response: &response)
    case (nil, nil): count(request: false, response: false, status: fallback)
    }
  }

  /// A request and its response. Their texts are taken (moved into the record), not copied.
  mutating func emit(
    _ proto: ApplicationProtocol, _ identity: FlowIdentity, request: inout PendingRequest,
    response: inout ResponseInfo
  ) {
    count(request: true, response: true, status: response.status)
    guard let buffer else { return }  // counts only (`fathom flows`)
    var log = Self.record(
      proto, identity, start: request.startNanos, end: response.endNanos,
      duration: max(0, response.startNanos - request.startNanos), status: response.status)
    take(&request, into: &log)
    if log.texts.isEmpty(.version) { log.texts.copy(.version, from: response.texts) }
    if !response.texts.isEmpty(.errorMessage) { log.texts.copy(.errorMessage, from: response.texts) }
    if !response.texts.isEmpty(.responseRequestID) { log.texts.copy(.responseRequestID, from: response.texts) }
    response.texts.recycle(into: &buffer.spareTexts)
    take(&response, into: &log)
    store(consume log, identity, buffer)
  }

  /// A request without an answer: timed out, evicted, unknown at the capture's end, or answered
  /// unreadably.
  mutating func emit(
    _ proto: ApplicationProtocol, _ identity: FlowIdentity, request: inout PendingRequest, status: RequestStatus
  ) {
    count(request: true, response: false, status: status)
    guard let buffer else { return }
    var log = Self.record(proto, identity, start: request.startNanos, end: request.lastNanos, status: status)
    take(&request, into: &log)
    store(consume log, identity, buffer)
  }

  /// A response whose request was not captured.
  mutating func emit(_ proto: ApplicationProtocol, _ identity: FlowIdentity, response: inout ResponseInfo) {
    count(request: false, response: true, status: response.status)
    guard let buffer else { return }
    var log = Self.record(
      proto, identity, start: response.startNanos, end: response.endNanos, status: response.status)
    swap(&log.texts, &response.texts)
    take(&response, into: &log)
    store(consume log, identity, buffer)
  }

  private mutating func count(request: Bool, response: Bool, status: RequestStatus) {
    if request { counts.requests &+= 1 }
    if response { counts.responses &+= 1 }
    switch status {
    case .clientError: counts.clientErrors &+= 1
    case .serverError: counts.serverErrors &+= 1
    case .timeout: counts.timeouts &+= 1
    case .unknown, .parseFailed: counts.unknown &+= 1
    case .ok: break
    }
    emitted += 1
  }

  /// The request's fields; its texts become the record's.
  @inline(__always) private func take(_ request: inout PendingRequest, into log: inout RequestLog) {
    log.requestTCPSequence = request.sequence
    log.requestBytes = request.bytes
    log.transactionID = request.transactionID
    swap(&log.texts, &request.texts)
  }

  /// The response's fields other than texts.
  @inline(__always) private func take(_ response: inout ResponseInfo, into log: inout RequestLog) {
    log.code = response.code
    log.responseTCPSequence = response.sequence
    log.responseBytes = response.bytes
    swap(&log.answers, &response.answers)
  }

  /// A record of the flow with its times (nanoseconds) and status; the halves' fields follow.
  private static func record(
    _ proto: ApplicationProtocol, _ identity: FlowIdentity, start: Int64, end: Int64, duration: Int64 = 0,
    status: RequestStatus
  ) -> RequestLog {
    var log = RequestLog(
      startMicros: start / 1000, endMicros: end / 1000, durationMicros: duration / 1000, applicationProtocol: proto,
      clientIP: identity.clientIP, clientPort: identity.clientPort, serverIP: identity.serverIP,
      serverPort: identity.serverPort, flowID: identity.flowID)
    log.status = status
    return log
  }

  /// Adds the capture point's interface and netns, and hands the record to the buffer (moved in:
  /// appending an `inout` record copied it, and then destroyed the original).
  @inline(__always) private func store(_ log: consuming RequestLog, _ identity: FlowIdentity, _ buffer: RequestBuffer) {
    let point = Int(identity.capturePoint)
    if point < buffer.capturePoints.count {
      if !buffer.capturePoints[point].isEmpty(.interface) {
        log.texts.copy(.interface, from: buffer.capturePoints[point])
      }
      if !buffer.capturePoints[point].isEmpty(.netns) { log.texts.copy(.netns, from: buffer.capturePoints[point]) }
    }
    buffer.records.append(consume log)
  }
}

/// Field text from wire bytes, bounded and with invalid UTF-8 repaired.
@inline(__always) func fieldText(_ bytes: ArraySlice<UInt8>, limit: Int) -> String {
  String(decoding: bytes.prefix(limit), as: UTF8.self)
}
