import FathomRecords

/// A view of header bytes: in the capture buffer when a header fits one segment, else in the
/// direction's own buffer. No reference counting, unlike ArraySlice.
typealias Bytes = Slice<UnsafeRawBufferPointer>

/// Header blocks of HTTP/1 requests and responses, and pairing.
extension HTTP1Parser {
  /// Headers Fathom reads; every other header is skipped without building a String.
  enum HeaderName: CaseIterable {
    case host, contentLength, transferEncoding, requestID, userAgent, forwardedFor, traceparent, b3, b3TraceID,
      b3SpanID, uberTraceID, upgrade

    var lowercased: [UInt8] {
      switch self {
      case .host: Array("host".utf8)
      case .contentLength: Array("content-length".utf8)
      case .transferEncoding: Array("transfer-encoding".utf8)
      case .requestID: Array("x-request-id".utf8)
      case .userAgent: Array("user-agent".utf8)
      case .forwardedFor: Array("x-forwarded-for".utf8)
      case .traceparent: Array("traceparent".utf8)
      case .b3: Array("b3".utf8)
      case .b3TraceID: Array("x-b3-traceid".utf8)
      case .b3SpanID: Array("x-b3-spanid".utf8)
      case .uberTraceID: Array("uber-trace-id".utf8)
      case .upgrade: Array("upgrade".utf8)
      }
    }

    static let table: [(HeaderName, [UInt8])] = allCases.map { ($0, $0.lowercased) }

    static func match(_ name: Bytes) -> HeaderName? {
      for (header, bytes) in table where bytes.count == name.count {
        var equal = true
        var index = name.startIndex
        for byte in bytes {
          let lowered = name[index] | ((name[index] >= 65 && name[index] <= 90) ? 0x20 : 0)
          if lowered != byte {
            equal = false
            break
          }
          index += 1
        }
        if equal { return header }
      }
      return nil
    }
  }

  /// The start line of a header block, and the headers Fathom reads with their trimmed values.
  static func headerFields(_ block: Bytes) -> (
    startLine: Bytes, fields: [(HeaderName, Bytes)]
  ) {
    var startLine: Bytes?
    var fields: [(HeaderName, Bytes)] = []
    var lineStart = block.startIndex
    var index = block.startIndex
    while index < block.endIndex {
      if block[index] == 0x0A {
        var end = index
        if end > lineStart, block[end - 1] == 0x0D { end -= 1 }
        let line = block[lineStart..<end]
        if startLine == nil {
          startLine = line
        } else if let colon = line.firstIndex(of: UInt8(ascii: ":")), let name = HeaderName.match(line[line.startIndex..<colon]) {
          var value = line[(colon + 1)...]
          while let byte = value.first, byte == 0x20 || byte == 0x09 { value = value.dropFirst() }
          while let byte = value.last, byte == 0x20 || byte == 0x09 { value = value.dropLast() }
          fields.append((name, value))
        }
        lineStart = index + 1
      }
      index += 1
    }
    return (startLine ?? block[block.startIndex..<block.startIndex], fields)
  }

  static func version(_ token: Bytes) -> String {
    token.starts(with: "HTTP/".utf8) ? String(decoding: token.dropFirst(5), as: UTF8.self) : ""
  }

  static func decimal(_ bytes: Bytes) -> Int? {
    var value = 0
    var digits = 0
    var seen = false
    for byte in bytes {
      guard byte >= 48 && byte <= 57 else { return seen && (byte == 0x20 || byte == 0x09) ? value : nil }
      seen = true
      if byte == 48 && digits == 0 { continue }  // leading zeros do not count toward the bound
      digits += 1
      guard digits <= 15 else { return nil }
      value = value * 10 + Int(byte - 48)
    }
    return seen ? value : nil
  }

  /// Case-insensitive search for a lowercase ASCII token.
  static func containsToken(_ value: Bytes, _ token: StaticString) -> Bool {
    let needle = UnsafeRawBufferPointer(start: token.utf8Start, count: token.utf8CodeUnitCount)
    guard needle.count <= value.count else { return false }
    var start = value.startIndex
    while start + needle.count <= value.endIndex {
      var match = true
      for offset in 0..<needle.count {
        let byte = value[start + offset]
        if (byte | ((byte >= 65 && byte <= 90) ? 0x20 : 0)) != needle[offset] {
          match = false
          break
        }
      }
      if match { return true }
      start += 1
    }
    return false
  }

  /// W3C traceparent "00-<trace>-<span>-<flags>", B3 single "<trace>-<span>[-...]", Jaeger
  /// "<trace>:<span>:<parent>:<flags>".
  static func traceIDs(_ value: Bytes, separator: Character, traceIndex: Int) -> (String, String)? {
    let parts = String(decoding: value, as: UTF8.self).split(separator: separator)
    guard parts.count > traceIndex + 1 else { return nil }
    return (String(parts[traceIndex]), String(parts[traceIndex + 1]))
  }

  /// Parses a request header block; returns how its body is framed.
  func requestHeader(
    _ block: Bytes, start: Int64, sequence: UInt32?, config: RequestConfig, sink: inout RequestSink,
    identity: FlowIdentity
  ) -> State {
    let (line, fields) = Self.headerFields(block)
    // "METHOD SP target SP HTTP/x.y"; an empty target ("GET  HTTP/1.1") is kept as empty.
    // Lenient like the servers it watches: "GET HTTP/1.1" has an empty target, "POST /HTTP/1.1"
    // no version.
    let tokens = line.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: false)
    guard tokens.count >= 2, Self.isMethod(tokens[0]) else {
      sink.parseFailures += 1
      return .resync
    }
    let target: Bytes
    let versionToken: Bytes
    let empty = tokens[0][tokens[0].startIndex..<tokens[0].startIndex]
    if tokens.count == 3 {
      (target, versionToken) = (tokens[1], tokens[2])
    } else if tokens[1].starts(with: "HTTP/".utf8) {
      (target, versionToken) = (empty, tokens[1])
    } else {
      (target, versionToken) = (tokens[1], empty)
    }
    expire(now: start, identity: identity, config: config, sink: &sink)
    var request = PendingRequest(startNanos: start, sequence: sequence)
    request.method = String(decoding: tokens[0].prefix(24), as: UTF8.self)
    request.resource = fieldText(target, limit: config.maxFieldBytes)
    request.endpoint = String(request.resource.prefix { $0 != "?" })
    request.version = Self.version(versionToken)
    var contentLength: Int?
    var chunked = false
    for (name, value) in fields {
      switch name {
      case .host: request.domain = fieldText(value, limit: config.maxFieldBytes)
      case .contentLength: contentLength = Self.decimal(value)
      case .transferEncoding: chunked = Self.containsToken(value, "chunked")
      case .requestID: request.requestID = fieldText(value, limit: 256)
      case .userAgent: request.userAgent = fieldText(value, limit: 256)
      case .forwardedFor: request.forwardedFor = fieldText(value, limit: 256)
      case .traceparent:
        if let (trace, span) = Self.traceIDs(value, separator: "-", traceIndex: 1) { (request.traceID, request.spanID) = (trace, span) }
      case .b3:
        if request.traceID.isEmpty, let (trace, span) = Self.traceIDs(value, separator: "-", traceIndex: 0) {
          (request.traceID, request.spanID) = (trace, span)
        }
      case .b3TraceID: if request.traceID.isEmpty { request.traceID = fieldText(value, limit: 64) }
      case .b3SpanID: if request.spanID.isEmpty { request.spanID = fieldText(value, limit: 64) }
      case .uberTraceID:
        if request.traceID.isEmpty, let (trace, span) = Self.traceIDs(value, separator: ":", traceIndex: 0) {
          (request.traceID, request.spanID) = (trace, span)
        }
      default: break
      }
    }
    if pending.count >= config.maxPendingPerFlow {
      sink.evicted += 1
      sink.emit(.http, identity, request: pending.removeFirst(), response: nil, status: .unknown)
    }
    pending.append(request)
    if chunked { return .chunkSize }
    if let contentLength, contentLength > 0 { return .body(remaining: contentLength) }
    return .idle
  }

  /// Parses a response header block; returns how its body is framed.
  func responseHeader(
    _ block: Bytes, start: Int64, sequence: UInt32?, end: Int64, config: RequestConfig,
    sink: inout RequestSink, identity: FlowIdentity
  ) -> State {
    let (line, fields) = Self.headerFields(block)
    let tokens = line.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: true)
    guard tokens.count >= 2, tokens[0].starts(with: "HTTP/".utf8), let code = Self.decimal(tokens[1]), code < 1000
    else {
      // The answer to the oldest request was unreadable: say so rather than wait for a timeout.
      sink.parseFailures += 1
      if !pending.isEmpty { sink.emit(.http, identity, request: pending.removeFirst(), response: nil, status: .parseFailed) }
      return .resync
    }
    if code >= 100 && code < 200 && code != 101 { return .idle }  // interim (100 Continue): the final one follows
    var response = ResponseInfo(
      startNanos: start, endNanos: end, sequence: sequence,
      status: code >= 500 ? .serverError : code >= 400 ? .clientError : .ok, code: Int32(code))
    response.version = Self.version(tokens[0])
    if code >= 400, tokens.count == 3 { response.errorMessage = fieldText(tokens[2], limit: 256) }
    if pending.isEmpty { completePartialRequest(config: config, sink: &sink, identity: identity) }
    var contentLength: Int?
    var chunked = false
    var upgradeToHTTP2 = false
    for (name, value) in fields {
      switch name {
      case .contentLength: contentLength = Self.decimal(value)
      case .transferEncoding: chunked = Self.containsToken(value, "chunked")
      case .requestID: response.requestID = fieldText(value, limit: 256)
      case .upgrade: upgradeToHTTP2 = Self.containsToken(value, "h2c")
      default: break
      }
    }
    currentResponse = response
    let method = pending.first?.method ?? ""
    if code == 101 || (method == "CONNECT" && code < 300) {
      // The connection now carries another protocol: WebSocket, a tunnel, or h2c.
      upgradedToHTTP2 = code == 101 && upgradeToHTTP2
      request.state = .stopped
      return .idle
    }
    if method == "HEAD" || code == 204 || code == 304 { return .idle }
    if chunked { return .chunkSize }
    if let contentLength { return contentLength > 0 ? .body(remaining: contentLength) : .idle }
    return .untilClose
  }

  /// A whole message was read: a request's size is known; a response completes its pair.
  func finishMessage(fromClient: Bool, bytes: UInt64, nanos: Int64, identity: FlowIdentity, sink: inout RequestSink) {
    if fromClient {
      guard !pending.isEmpty else { return }
      pending[pending.count - 1].bytes = bytes
      pending[pending.count - 1].lastNanos = nanos
      return
    }
    guard var response = currentResponse else { return }
    response.bytes = bytes
    response.endNanos = nanos
    currentResponse = nil
    let request = pending.isEmpty ? nil : pending.removeFirst()
    sink.emit(.http, identity, request: request, response: response)
  }

  /// Requests waiting longer than the window time out.
  func expire(now: Int64, identity: FlowIdentity, config: RequestConfig, sink: inout RequestSink) {
    let window = Int64(config.tcpResponseWindow * 1e9)
    while let first = pending.first, now - first.lastNanos > window {
      sink.emit(.http, identity, request: pending.removeFirst(), response: nil, status: .timeout)
    }
  }

  /// A response arrived while the request's header was still incomplete (its end was not
  /// captured): read what there is rather than lose the request.
  func completePartialRequest(config: RequestConfig, sink: inout RequestSink, identity: FlowIdentity) {
    guard request.state == .header, !request.buffer.isEmpty else { return }
    let partial = request.buffer + [0x0D, 0x0A, 0x0D, 0x0A]
    let (start, sequence) = (request.messageStart, request.messageSequence)
    let state = partial.withUnsafeBytes {
      requestHeader($0[...], start: start, sequence: sequence, config: config, sink: &sink, identity: identity)
    }
    if state != .resync { pending[pending.count - 1].bytes = UInt64(request.buffer.count) }
    request = Direction(state: .resync)
  }

  /// The flow ended: a response read until close completes; unanswered requests time out (or are
  /// `unknown` when the capture simply stopped).
  func finish(
    nanos: Int64, unanswered: RequestStatus, identity: FlowIdentity, config: RequestConfig, sink: inout RequestSink
  ) {
    completePartialRequest(config: config, sink: &sink, identity: identity)
    if currentResponse == nil, response.state == .header, !response.buffer.isEmpty, !pending.isEmpty {
      // Only the start of the answer was captured: its status line still tells the outcome.
      let partial = response.buffer + [0x0D, 0x0A, 0x0D, 0x0A]
      let (start, sequence) = (response.messageStart, response.messageSequence)
      _ = partial.withUnsafeBytes {
        responseHeader($0[...], start: start, sequence: sequence, end: nanos, config: config, sink: &sink, identity: identity)
      }
      if currentResponse != nil { response.messageBytes = UInt64(response.buffer.count) }
    }
    if var response = currentResponse {
      response.bytes = self.response.messageBytes
      response.endNanos = max(response.endNanos, nanos)
      currentResponse = nil
      sink.emit(.http, identity, request: pending.isEmpty ? nil : pending.removeFirst(), response: response)
    }
    while !pending.isEmpty {
      sink.emit(.http, identity, request: pending.removeFirst(), response: nil, status: unanswered)
    }
  }
}
