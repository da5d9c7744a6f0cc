import FathomRecords

#if canImport(Glibc)
  import Glibc
#endif

/// A view of header bytes: in the capture buffer when a header fits one segment, else in the
/// direction's own buffer. No reference counting, unlike ArraySlice.
typealias Bytes = Slice<UnsafeRawBufferPointer>

extension Slice where Base == UnsafeRawBufferPointer {
  /// Byte-wise prefix test against a literal, without the generic sequence comparison.
  @inline(__always) func hasPrefix(_ literal: StaticString) -> Bool {
    let length = literal.utf8CodeUnitCount
    guard count >= length else { return false }
    let bytes = literal.utf8Start
    var index = startIndex
    for offset in 0..<length {
      if self[index] != bytes[offset] { return false }
      index += 1
    }
    return true
  }

  @inline(__always) func equals(_ literal: StaticString) -> Bool {
    count == literal.utf8CodeUnitCount && hasPrefix(literal)
  }

  /// First index of a byte, by memchr.
  @inline(__always) func index(ofByte byte: UInt8) -> Int? {
    guard count > 0, let base = base.baseAddress else { return nil }
    guard let found = memchr(base + startIndex, Int32(byte), count) else { return nil }
    return UnsafeRawPointer(found) - base
  }
}

/// Header blocks of HTTP/1 requests and responses, and pairing.
extension HTTP1Parser {
  /// The headers Fathom reads, as views of their trimmed values; every other header is skipped
  /// without building a String or an array.
  struct KnownHeaders {
    enum Name: Int {
      case host, contentLength, transferEncoding, requestID, userAgent, forwardedFor, traceparent, b3, b3TraceID
      case b3SpanID, uberTraceID, upgrade
    }

    /// The bytes the values lie in; each value is a range of it (end 0: header absent — a value
    /// starts after a colon, so never at 0). Compact, because a header block is handed through
    /// several calls: twelve optional slices made it half a kilobyte to copy each time.
    let source: Bytes
    private var starts = SIMD16<UInt32>()
    private var ends = SIMD16<UInt32>()

    init(source: Bytes) { self.source = source }

    @inline(__always) subscript(name: Name) -> Bytes? {
      let end = Int(ends[name.rawValue])
      guard end > 0 else { return nil }
      return source[(source.startIndex + Int(starts[name.rawValue]))..<(source.startIndex + end)]
    }

    /// Keeps `value` (a slice of `source`) as the header's.
    @inline(__always) mutating func set(_ name: Name, _ value: Bytes) {
      starts[name.rawValue] = UInt32(truncatingIfNeeded: value.startIndex - source.startIndex)
      ends[name.rawValue] = UInt32(truncatingIfNeeded: value.endIndex - source.startIndex)
    }
  }

  /// Case-insensitive comparison of the `count` bytes at `name` with a lowercase ASCII name of
  /// the same length.
  @inline(__always) static func named(_ name: UnsafePointer<UInt8>, _ expected: StaticString) -> Bool {
    let letters = expected.utf8Start
    for offset in 0..<expected.utf8CodeUnitCount {
      let byte = name[offset]
      if (byte | ((byte >= 65 && byte <= 90) ? 0x20 : 0)) != letters[offset] { return false }
    }
    return true
  }

  /// A header block read: its start line, the known headers, and where it ends.
  struct HeaderBlock {
    var startLine: Bytes
    var headers: KnownHeaders
    /// Index just past the blank line that ends the block (the data's end when it had none).
    var end: Int

    /// Nothing read yet from `bytes`.
    init(reading bytes: Bytes) {
      startLine = bytes[bytes.startIndex..<bytes.startIndex]
      headers = KnownHeaders(source: bytes)
      end = bytes.endIndex
    }
  }

  /// The fields of a complete header block (the bytes up to and including its blank line).
  static func headerFields(_ block: Bytes) -> HeaderBlock {
    var header = HeaderBlock(reading: block)
    _ = scanHeader(into: &header, limit: .max, requireEnd: false)
    return header
  }

  /// Reads a header block from the start of its bytes in one pass: the start line, the known
  /// headers, and the blank line that ends it. False when `requireEnd` and no blank line comes
  /// within `limit` bytes (the header continues in a later segment, or is too long). Only the
  /// lines of known headers are trimmed and kept; the rest cost a newline search, a colon search
  /// and a length switch (most header names have a length no known one has). Fills `block` in
  /// place: it is handed on by reference, not copied.
  static func scanHeader(into block: inout HeaderBlock, limit: Int, requireEnd: Bool = true) -> Bool {
    let bytes = block.headers.source
    let end = bytes.endIndex
    guard let base = bytes.base.baseAddress, bytes.startIndex < end else { return !requireEnd }
    let byte = base.assumingMemoryBound(to: UInt8.self)
    // The start line: a blank line cannot end a block before it.
    let firstNewline = newline(in: byte, from: bytes.startIndex, to: end)
    var startLineEnd = firstNewline ?? end
    if startLineEnd > bytes.startIndex, byte[startLineEnd - 1] == 0x0D { startLineEnd -= 1 }
    block.startLine = bytes[bytes.startIndex..<startLineEnd]
    guard let firstNewline else { return !requireEnd }
    let scanEnd = limit == .max ? end : min(end, bytes.startIndex + limit)
    var lineStart = firstNewline + 1
    while lineStart < scanEnd {
      guard let newline = newline(in: byte, from: lineStart, to: scanEnd) else { break }
      var lineEnd = newline
      if lineEnd > lineStart, byte[lineEnd - 1] == 0x0D { lineEnd -= 1 }
      if lineEnd == lineStart {
        block.end = newline + 1
        return true
      }
      read(line: lineStart, end: lineEnd, of: bytes, into: &block.headers)
      lineStart = newline + 1
    }
    if requireEnd { return false }
    if lineStart < end { read(line: lineStart, end: end, of: bytes, into: &block.headers) }
    return true
  }

  /// Index of the first newline in `byte[start..<end]`. Eight bytes at a time for the first 64
  /// (a header line is mostly 20 to 60 bytes, where a call to memchr cost more than the search),
  /// then memchr.
  @inline(__always) static func newline(in byte: UnsafePointer<UInt8>, from start: Int, to end: Int) -> Int? {
    var at = start
    let wordsEnd = min(end, start + 64)
    while at + 8 <= wordsEnd {
      if let found = firstByte(0x0A, inWordAt: byte + at) { return at + found }
      at += 8
    }
    guard at < end, let found = memchr(byte + at, 0x0A, end - at) else { return nil }
    return UnsafePointer(found.assumingMemoryBound(to: UInt8.self)) - byte
  }

  /// The position (0–7) of the first `target` in the eight bytes at `bytes`, if any: the lowest
  /// zero byte of the word xor the target repeated (the zero-byte test is exact at its lowest hit;
  /// the word is read little-endian so that its lowest byte comes first).
  @inline(__always) static func firstByte(_ target: UInt8, inWordAt bytes: UnsafePointer<UInt8>) -> Int? {
    let repeated = 0x0101_0101_0101_0101 &* UInt64(target)
    let word = UInt64(littleEndian: UnsafeRawPointer(bytes).loadUnaligned(as: UInt64.self)) ^ repeated
    let zeros = (word &- 0x0101_0101_0101_0101) & ~word & 0x8080_8080_8080_8080
    return zeros == 0 ? nil : zeros.trailingZeroBitCount >> 3
  }

  /// One header line: kept when its name is one Fathom reads.
  @inline(__always) private static func read(
    line lineStart: Int, end lineEnd: Int, of bytes: Bytes, into headers: inout KnownHeaders
  ) {
    let byte = bytes.base.baseAddress!.assumingMemoryBound(to: UInt8.self)
    var colon = lineStart
    // Eight bytes at a time (names are mostly 4 to 16 bytes).
    while colon + 8 <= lineEnd {
      if let found = firstByte(UInt8(ascii: ":"), inWordAt: byte + colon) {
        colon += found
        break
      }
      colon += 8
    }
    while colon < lineEnd, byte[colon] != UInt8(ascii: ":") { colon += 1 }
    guard colon < lineEnd else { return }
    let name = byte + lineStart
    let known: KnownHeaders.Name?
    switch colon - lineStart {
    case 2: known = named(name, "b3") ? .b3 : nil
    case 4: known = named(name, "host") ? .host : nil
    case 7: known = named(name, "upgrade") ? .upgrade : nil
    case 10: known = named(name, "user-agent") ? .userAgent : nil
    case 11: known = named(name, "traceparent") ? .traceparent : named(name, "x-b3-spanid") ? .b3SpanID : nil
    case 12: known = named(name, "x-request-id") ? .requestID : named(name, "x-b3-traceid") ? .b3TraceID : nil
    case 13: known = named(name, "uber-trace-id") ? .uberTraceID : nil
    case 14: known = named(name, "content-length") ? .contentLength : nil
    case 15: known = named(name, "x-forwarded-for") ? .forwardedFor : nil
    case 17: known = named(name, "transfer-encoding") ? .transferEncoding : nil
    default: known = nil
    }
    if let known { headers.set(known, trimmed(bytes, from: colon + 1, to: lineEnd)) }
  }

  /// `block[from..<to]` without the blanks around it.
  @inline(__always) static func trimmed(_ block: Bytes, from: Int, to: Int) -> Bytes {
    let bytes = block.base.baseAddress!.assumingMemoryBound(to: UInt8.self)
    var first = from
    var last = to
    while first < last, bytes[first] == 0x20 || bytes[first] == 0x09 { first += 1 }
    while last > first, bytes[last - 1] == 0x20 || bytes[last - 1] == 0x09 { last -= 1 }
    return block[first..<last]
  }

  /// Splits "a SP b SP c" at its first and (when `three`) last space; empty middle kept.
  static func startLineTokens(_ line: Bytes) -> (Bytes, Bytes, Bytes?)? {
    guard let first = nearIndex(ofSpaceIn: line) else { return nil }
    let rest = line[(first + 1)...]
    let head = line[line.startIndex..<first]
    guard let second = nearIndex(ofSpaceIn: rest) else { return (head, rest, nil) }
    return (head, rest[rest.startIndex..<second], rest[(second + 1)...])
  }

  /// The first space: a method, a version and a status code are a few bytes, which a loop reads
  /// faster than a call to memchr; a long target takes memchr after the first sixteen.
  @inline(__always) private static func nearIndex(ofSpaceIn bytes: Bytes) -> Int? {
    let near = min(bytes.endIndex, bytes.startIndex + 16)
    var index = bytes.startIndex
    while index < near {
      if bytes[index] == 0x20 { return index }
      index += 1
    }
    return near == bytes.endIndex ? nil : bytes[near...].index(ofByte: 0x20)
  }

  /// The version after "HTTP/", bounded; nothing when the token is not a version.
  static func setVersion(_ token: Bytes, in texts: inout RequestTexts) {
    guard token.hasPrefix("HTTP/") else { return }
    texts.set(.version, bytes: UnsafeRawBufferPointer(rebasing: token.dropFirst(5)), limit: 16)
  }

  static func decimal(_ bytes: Bytes) -> Int? {
    // Nearly always (status codes, lengths) a few plain digits: read without the general loop's
    // checks; fifteen digits cannot overflow.
    if !bytes.isEmpty, bytes.count <= 15 {
      var quick = 0
      var index = bytes.startIndex
      while index < bytes.endIndex {
        let digit = bytes[index] &- 48
        if digit > 9 { break }
        quick = quick &* 10 &+ Int(digit)
        index += 1
      }
      if index == bytes.endIndex { return quick }
    }
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
    _ header: HeaderBlock, start: Int64, sequence: UInt32?, config: RequestConfig, sink: inout RequestSink,
    identity: FlowIdentity
  ) -> State {
    let (line, headers) = (header.startLine, header.headers)
    // "METHOD SP target SP HTTP/x.y". Lenient like the servers it watches: "GET  HTTP/1.1" and
    // "GET HTTP/1.1" have an empty target, "POST /HTTP/1.1" no version.
    guard let (method, second, third) = Self.startLineTokens(line), Self.isMethod(method) else {
      sink.parseFailures += 1
      return .resync
    }
    let empty = method[method.startIndex..<method.startIndex]
    let target: Bytes
    let versionToken: Bytes
    if let third {
      (target, versionToken) = (second, third)
    } else if second.hasPrefix("HTTP/") {
      (target, versionToken) = (empty, second)
    } else {
      (target, versionToken) = (second, empty)
    }
    expire(now: start, identity: identity, config: config, sink: &sink)
    let contentLength = headers[.contentLength].flatMap { Self.decimal($0) }
    let chunked = headers[.transferEncoding].map { Self.containsToken($0, "chunked") } ?? false
    if pending.count >= config.maxPendingPerFlow {
      sink.evicted += 1
      var evicted = pending.takeOldest()
      sink.emit(.http, identity, request: &evicted, status: .unknown)
    }
    // Filled in where it is kept: built aside and appended, the request was copied in.
    // Counting only (`fathom flows`): the record's texts would be thrown away unread.
    pending.append(
      PendingRequest(
        startNanos: start, sequence: sequence, texts: sink.keepsRecords ? sink.newTexts() : RequestTexts()))
    pending[pending.count - 1].framing = Self.framing(of: method)
    if sink.keepsRecords {
      Self.setTexts(
        of: &pending[pending.count - 1], method: method, target: target, version: versionToken,
        headers: headers, config: config)
    }
    if chunked { return .chunkSize }
    if let contentLength, contentLength > 0 { return .body(remaining: contentLength) }
    return .idle
  }

  /// A request's texts from its start line and headers.
  static func setTexts(
    of request: inout PendingRequest, method: Bytes, target: Bytes, version: Bytes, headers: KnownHeaders,
    config: RequestConfig
  ) {
    request.texts.set(.method, bytes: UnsafeRawBufferPointer(rebasing: method))
    request.texts.set(.resource, bytes: UnsafeRawBufferPointer(rebasing: target), limit: config.maxFieldBytes)
    if let query = target.index(ofByte: UInt8(ascii: "?")) {
      request.texts.set(
        .endpoint, bytes: UnsafeRawBufferPointer(rebasing: target[target.startIndex..<query]),
        limit: config.maxFieldBytes)
    } else {
      request.texts.share(.endpoint, with: .resource)
    }
    setVersion(version, in: &request.texts)
    if let host = headers[.host] {
      request.texts.set(.domain, bytes: UnsafeRawBufferPointer(rebasing: host), limit: config.maxFieldBytes)
    }
    if let value = headers[.requestID] {
      request.texts.set(.requestID, bytes: UnsafeRawBufferPointer(rebasing: value), limit: 256)
    }
    if let value = headers[.userAgent] {
      request.texts.set(.userAgent, bytes: UnsafeRawBufferPointer(rebasing: value), limit: 256)
    }
    if let value = headers[.forwardedFor] {
      request.texts.set(.forwardedFor, bytes: UnsafeRawBufferPointer(rebasing: value), limit: 256)
    }
    if let value = headers[.traceparent], let (trace, span) = traceIDs(value, separator: "-", traceIndex: 1) {
      (request.texts[.traceID], request.texts[.spanID]) = (trace, span)
    } else if let value = headers[.b3], let (trace, span) = traceIDs(value, separator: "-", traceIndex: 0) {
      (request.texts[.traceID], request.texts[.spanID]) = (trace, span)
    } else if let value = headers[.b3TraceID] {
      request.texts.set(.traceID, bytes: UnsafeRawBufferPointer(rebasing: value), limit: 64)
      if let span = headers[.b3SpanID] {
        request.texts.set(.spanID, bytes: UnsafeRawBufferPointer(rebasing: span), limit: 64)
      }
    } else if let value = headers[.uberTraceID], let (trace, span) = traceIDs(value, separator: ":", traceIndex: 0) {
      (request.texts[.traceID], request.texts[.spanID]) = (trace, span)
    }
  }

  /// Parses a response header block; returns how its body is framed.
  func responseHeader(
    _ header: HeaderBlock, start: Int64, sequence: UInt32?, end: Int64, config: RequestConfig,
    sink: inout RequestSink, identity: FlowIdentity
  ) -> State {
    let (line, headers) = (header.startLine, header.headers)
    guard let (versionToken, codeToken, reason) = Self.startLineTokens(line), versionToken.hasPrefix("HTTP/"),
      let code = Self.decimal(codeToken), code < 1000
    else {
      // The answer to the oldest request was unreadable: say so rather than wait for a timeout.
      sink.parseFailures += 1
      if !pending.isEmpty {
        var unreadable = pending.takeOldest()
        sink.emit(.http, identity, request: &unreadable, status: .parseFailed)
      }
      return .resync
    }
    if code >= 100 && code < 200 && code != 101 { return .idle }  // interim (100 Continue): the final one follows
    // Filled in where it is kept (built aside and assigned, it was copied in).
    currentResponse = ResponseInfo(
      startNanos: start, endNanos: end, sequence: sequence,
      status: code >= 500 ? .serverError : code >= 400 ? .clientError : .ok, code: Int32(code))
    if sink.keepsRecords {
      // The record takes the request's version; the response's only fills in a missing one (kept
      // off the common path: it would cost every response a text buffer).
      let needsVersion = pending.isEmpty || pending[0].texts.isEmpty(.version)
      let errorReason = code >= 400 ? reason : nil
      let requestID = headers[.requestID]
      if needsVersion || errorReason != nil || requestID != nil { currentResponse!.texts = sink.newTexts() }
      if needsVersion { Self.setVersion(versionToken, in: &currentResponse!.texts) }
      if let errorReason {
        currentResponse!.texts.set(.errorMessage, bytes: UnsafeRawBufferPointer(rebasing: errorReason), limit: 256)
      }
      if let requestID {
        currentResponse!.texts.set(.responseRequestID, bytes: UnsafeRawBufferPointer(rebasing: requestID), limit: 256)
      }
    }
    if pending.isEmpty { completePartialRequest(config: config, sink: &sink, identity: identity) }
    let contentLength = headers[.contentLength].flatMap { Self.decimal($0) }
    let chunked = headers[.transferEncoding].map { Self.containsToken($0, "chunked") } ?? false
    let upgradeToHTTP2 = headers[.upgrade].map { Self.containsToken($0, "h2c") } ?? false
    let method = pending.isEmpty ? .other : pending[0].framing
    if code == 101 || (method == .connect && code < 300) {
      // The connection now carries another protocol: WebSocket, a tunnel, or h2c.
      upgradedToHTTP2 = code == 101 && upgradeToHTTP2
      request.state = .stopped
      return .idle
    }
    if method == .head || code == 204 || code == 304 { return .idle }
    if chunked { return .chunkSize }
    if let contentLength { return contentLength > 0 ? .body(remaining: contentLength) : .idle }
    return .untilClose
  }

  /// The request methods whose answers are framed differently.
  enum FramingMethod { case head, connect, other }

  static func framing(of method: Bytes) -> FramingMethod {
    if method.equals("HEAD") { return .head }
    if method.equals("CONNECT") { return .connect }
    return .other
  }

  /// A whole message was read: a request's size is known; a response completes its pair.
  func finishMessage(fromClient: Bool, bytes: UInt64, nanos: Int64, identity: FlowIdentity, sink: inout RequestSink) {
    if fromClient {
      guard !pending.isEmpty else { return }
      pending[pending.count - 1].bytes = bytes
      pending[pending.count - 1].lastNanos = nanos
      return
    }
    guard var response = currentResponse.take() else { return }
    response.bytes = bytes
    response.endNanos = nanos
    guard !pending.isEmpty else {
      sink.emit(.http, identity, response: &response)
      return
    }
    var request = pending.takeOldest()
    if upgradedToHTTP2 {
      // h2c: the upgraded request is answered on HTTP/2 stream 1; the 101 is not its answer.
      upgradeRequest = request
      return
    }
    sink.emit(.http, identity, request: &request, response: &response)
  }

  /// Requests waiting longer than the window time out.
  func expire(now: Int64, identity: FlowIdentity, config: RequestConfig, sink: inout RequestSink) {
    let window = Int64(config.tcpResponseWindow * 1e9)
    // The field is read in place: `pending.first` copied the whole request (and its texts).
    while !pending.isEmpty, now - pending[0].lastNanos > window {
      var expired = pending.takeOldest()
      sink.emit(.http, identity, request: &expired, status: .timeout)
    }
  }

  /// A response arrived while the request's header was still incomplete (its end was not
  /// captured): read what there is rather than lose the request.
  func completePartialRequest(config: RequestConfig, sink: inout RequestSink, identity: FlowIdentity) {
    guard request.state == .header, !request.buffer.isEmpty else { return }
    let partial = request.buffer + [0x0D, 0x0A, 0x0D, 0x0A]
    let (start, sequence) = (request.messageStart, request.messageSequence)
    let state = partial.withUnsafeBytes {
      requestHeader(
        Self.headerFields($0[...]), start: start, sequence: sequence, config: config, sink: &sink, identity: identity)
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
        responseHeader(
          Self.headerFields($0[...]), start: start, sequence: sequence, end: nanos, config: config, sink: &sink,
          identity: identity)
      }
      if currentResponse != nil { response.messageBytes = UInt64(response.buffer.count) }
    }
    if var response = currentResponse {
      response.bytes = self.response.messageBytes
      response.endNanos = max(response.endNanos, nanos)
      currentResponse = nil
      sink.emit(.http, identity, request: pending.isEmpty ? nil : pending.takeOldest(), response: response)
    }
    while !pending.isEmpty {
      var request = pending.takeOldest()
      sink.emit(.http, identity, request: &request, status: unanswered)
    }
  }
}
