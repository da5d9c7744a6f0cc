import FathomRecords

#if canImport(Glibc)
  import Glibc
#endif

/// HTTP/1.x on one TCP connection: requests and responses framed by their headers (Content-Length,
/// chunked, HEAD, 1xx/204/304, read-until-close), pipelined requests paired with responses in order.
final class HTTP1Parser {
  /// Where one direction's message parsing stands.
  enum State: Equatable {
    case idle
    case header
    case body(remaining: Int)
    case chunkSize
    case chunkData(remaining: Int)
    case trailer
    case untilClose
    /// After a gap: skip to something that looks like the start of a message.
    case resync
    /// Upgraded (WebSocket, h2c handed to HTTP/2) or given up: ignore the rest.
    case stopped
  }

  /// Stored in the parser and parsed `inout` (as separate objects they were two more allocations
  /// per connection and two more pointers to chase when its flow ends).
  struct Direction {
    var state: State
    var buffer: [UInt8] = []
    var messageStart: Int64 = 0
    var messageSequence: UInt32?
    var messageBytes: UInt64 = 0

    init(state: State = .idle) { self.state = state }

    /// As new, keeping the buffer's storage unless a long header grew it.
    mutating func reset() {
      state = .idle
      if buffer.capacity > 4096 { buffer = [] } else { buffer.removeAll(keepingCapacity: true) }
      messageStart = 0
      messageSequence = nil
      messageBytes = 0
    }
  }

  var request = Direction()
  var response = Direction()
  var pending: [PendingRequest] = []
  /// The response being read (header parsed, body in progress).
  var currentResponse: ResponseInfo?
  var currentResponseClosesConnection = false
  /// Set when a 101 response switches the connection to h2c: the caller hands over.
  var upgradedToHTTP2 = false
  /// The request that asked for h2c; HTTP/2 answers it on stream 1.
  var upgradeRequest: PendingRequest?

  /// As new, for another connection (the protocol stage reuses parsers: one connection per
  /// request is common, and a parser, its two directions and its pending list were four
  /// allocations each time).
  func reset() {
    request.reset()
    response.reset()
    pending.removeAll(keepingCapacity: pending.capacity <= 16)
    currentResponse = nil
    currentResponseClosesConnection = false
    upgradedToHTTP2 = false
    upgradeRequest = nil
  }

  static let methods: [[UInt8]] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"]
    .map { Array($0.utf8) }

  /// True when `bytes` begins like an HTTP/1 request or response.
  static func looksLikeHTTP(_ bytes: UnsafeRawBufferPointer) -> Bool {
    if bytes.starts(with: "HTTP/1.".utf8) { return true }
    for method in methods where bytes.count > method.count {
      if bytes.starts(with: method) && bytes[method.count] == UInt8(ascii: " ") { return true }
    }
    return startsRequest(bytes)
  }

  // MARK: feeding

  /// Parses bytes of one direction; returns where parsing stopped, which is before the end only
  /// when the connection switched protocols (the rest belongs to the new protocol, e.g. h2c).
  @discardableResult
  func feed(
    _ data: UnsafeRawBufferPointer, fromClient: Bool, sequence: UInt32, nanos: Int64, identity: FlowIdentity,
    config: RequestConfig, sink: inout RequestSink
  ) -> Int {
    var offset = 0
    while offset < data.count {
      let position = sequence &+ UInt32(truncatingIfNeeded: offset)
      let consumed: Int?
      if fromClient {
        if request.state == .stopped { return offset }
        consumed = step(
          data, from: offset, direction: &request, fromClient: true, sequence: position, nanos: nanos,
          identity: identity, config: config, sink: &sink)
      } else {
        if response.state == .stopped { return offset }
        consumed = step(
          data, from: offset, direction: &response, fromClient: false, sequence: position, nanos: nanos,
          identity: identity, config: config, sink: &sink)
      }
      guard let consumed else { return data.count }  // everything left was buffered: waiting for more bytes
      offset += consumed
    }
    return data.count
  }

  func gap(fromClient: Bool) {
    if fromClient {
      if request.state != .stopped { request = Direction(state: .resync) }
    } else if response.state != .stopped {
      response = Direction(state: .resync)
      currentResponse = nil
    }
  }

  /// Consumes bytes of one state and returns how many (0 after a state change that consumes
  /// nothing), or nil when all remaining bytes were taken or buffered.
  private func step(
    _ data: UnsafeRawBufferPointer, from offset: Int, direction: inout Direction, fromClient: Bool, sequence: UInt32,
    nanos: Int64, identity: FlowIdentity, config: RequestConfig, sink: inout RequestSink
  ) -> Int? {
    defer {
      if !fromClient && request.state == .stopped && direction.state == .idle { direction.state = .stopped }
    }
    let available = data.count - offset
    let rest = UnsafeRawBufferPointer(rebasing: data[offset...])
    switch direction.state {
    case .stopped:
      return nil
    case .resync:
      // A message starts at a line start with a method or "HTTP/1."; skip to the first one.
      var index = 0
      while index < available {
        if index == 0 || rest[index - 1] == 0x0A {
          let candidate = UnsafeRawBufferPointer(rebasing: rest[index...])
          if fromClient ? Self.startsRequest(candidate) : candidate.starts(with: "HTTP/1.".utf8) {
            direction.state = .idle
            return index
          }
        }
        index += 1
      }
      return nil
    case .idle:
      // Skip blank lines between messages, then start one.
      if rest[0] == 0x0D || rest[0] == 0x0A { return 1 }
      direction.state = .header
      direction.buffer.removeAll(keepingCapacity: true)
      direction.messageStart = nanos
      direction.messageSequence = sequence
      direction.messageBytes = 0
      return 0
    case .header:
      // Fast path: the whole header is in this segment and nothing is buffered: parse in place.
      // One pass finds its end and its fields.
      if direction.buffer.isEmpty {
        var header = HeaderBlock(reading: rest[...])
        if Self.scanHeader(into: &header, limit: config.maxHeaderBytes) {
          direction.messageBytes += UInt64(header.end)
          headerComplete(
            header, direction: &direction, fromClient: fromClient, nanos: nanos, identity: identity, config: config,
            sink: &sink)
          return header.end
        }
      }
      // Copy at most what a header may still need; a body in the same segment stays in place.
      let before = direction.buffer.count
      direction.buffer.append(contentsOf: rest.prefix(max(0, config.maxHeaderBytes + 4 - before)))
      guard let end = direction.buffer.withUnsafeBytes({ Self.headerEnd($0, searchFrom: max(0, before - 3)) }) else {
        if direction.buffer.count > config.maxHeaderBytes {
          sink.parseFailures += 1
          direction.state = .resync
          direction.buffer.removeAll(keepingCapacity: true)
        }
        return nil
      }
      direction.messageBytes += UInt64(end)
      var header: [UInt8] = []
      swap(&header, &direction.buffer)
      header.withUnsafeBytes {
        headerComplete(
          Self.headerFields($0[0..<end]), direction: &direction, fromClient: fromClient, nanos: nanos,
          identity: identity,
          config: config, sink: &sink)
      }
      header.removeAll(keepingCapacity: true)
      swap(&header, &direction.buffer)
      return end - before
    case .body(let remaining):
      let take = min(remaining, available)
      direction.messageBytes += UInt64(take)
      if take == remaining {
        direction.state = .idle
        finishMessage(
          fromClient: fromClient, bytes: direction.messageBytes, nanos: nanos, identity: identity, sink: &sink)
      } else {
        direction.state = .body(remaining: remaining - take)
      }
      return take
    case .chunkSize, .trailer:
      guard let newline = rest.firstIndex(of: 0x0A) else {
        direction.buffer.append(contentsOf: rest)
        direction.messageBytes += UInt64(available)
        if direction.buffer.count > config.maxHeaderBytes {
          sink.parseFailures += 1
          direction.state = .resync
        }
        return nil
      }
      direction.buffer.append(contentsOf: rest[..<newline])
      direction.messageBytes += UInt64(newline + 1)
      let line = direction.buffer
      direction.buffer.removeAll(keepingCapacity: true)
      if direction.state == .trailer {
        let blank = line.isEmpty || line == [0x0D]
        if blank {
          direction.state = .idle
          finishMessage(
            fromClient: fromClient, bytes: direction.messageBytes, nanos: nanos, identity: identity, sink: &sink)
        }
        return newline + 1
      }
      guard let size = Self.chunkSize(line) else {
        sink.parseFailures += 1
        direction.state = .resync
        return newline + 1
      }
      direction.state = size == 0 ? .trailer : .chunkData(remaining: size + 2)
      return newline + 1
    case .chunkData(let remaining):
      let take = min(remaining, available)
      direction.messageBytes += UInt64(take)
      direction.state = take == remaining ? .chunkSize : .chunkData(remaining: remaining - take)
      return take
    case .untilClose:
      direction.messageBytes += UInt64(available)
      return nil
    }
  }

  /// Within an HTTP connection any method token counts (QUERY, PROPFIND, CCM_POST, ...): a
  /// request line is a token, a space, and a line that ends with "HTTP/1.x".
  static func startsRequest(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard let space = bytes.prefix(32).firstIndex(of: 0x20), space > 0,
      isMethod(bytes[0..<space])
    else { return false }
    let lineEnd = bytes.prefix(8192).firstIndex(of: 0x0A) ?? min(bytes.count, 8192)
    var end = lineEnd
    if end > 0, bytes[end - 1] == 0x0D { end -= 1 }
    return end >= 8 && UnsafeRawBufferPointer(rebasing: bytes[(end - 8)..<(end - 3)]).elementsEqual("HTTP/".utf8)
  }

  /// Method tokens: letters, digits, '_' and '-', up to 24 bytes.
  static func isMethod<Token: Collection<UInt8>>(_ token: Token) -> Bool {
    guard !token.isEmpty, token.count <= 24 else { return false }
    return token.allSatisfy {
      ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 || $0 == 45
    }
  }

  /// A header block is complete: parse it and set how the body is framed.
  private func headerComplete(
    _ header: HeaderBlock, direction: inout Direction, fromClient: Bool, nanos: Int64, identity: FlowIdentity,
    config: RequestConfig, sink: inout RequestSink
  ) {
    if fromClient {
      direction.state = requestHeader(
        header, start: direction.messageStart, sequence: direction.messageSequence, config: config, sink: &sink,
        identity: identity)
    } else {
      direction.state = responseHeader(
        header, start: direction.messageStart, sequence: direction.messageSequence, end: nanos, config: config,
        sink: &sink, identity: identity)
    }
    if direction.state == .idle {
      finishMessage(
        fromClient: fromClient, bytes: direction.messageBytes, nanos: nanos, identity: identity, sink: &sink)
    }
  }

  /// Index just past "\r\n\r\n" (or "\n\n"), searching from `start`.
  static func headerEnd(_ buffer: UnsafeRawBufferPointer, searchFrom start: Int) -> Int? {
    guard let base = buffer.baseAddress else { return nil }
    let byte = base.assumingMemoryBound(to: UInt8.self)
    var index = start
    while index < buffer.count {
      guard let newline = newline(in: byte, from: index, to: buffer.count) else { return nil }
      if newline + 1 < buffer.count, buffer[newline + 1] == 0x0A { return newline + 2 }
      if newline + 2 < buffer.count, buffer[newline + 1] == 0x0D, buffer[newline + 2] == 0x0A { return newline + 3 }
      index = newline + 1
    }
    return nil
  }

  static func chunkSize(_ line: [UInt8]) -> Int? {
    var value = 0
    var digits = 0
    for byte in line {
      let digit: Int
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = Int(byte - UInt8(ascii: "0"))
      case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = Int(byte - UInt8(ascii: "a")) + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = Int(byte - UInt8(ascii: "A")) + 10
      case UInt8(ascii: " "),
        UInt8(ascii: "\t") where digits == 0:
        continue
      default:
        return digits > 0 ? value : nil  // chunk extensions (";...") and CR end the number
      }
      digits += 1
      guard digits <= 15 else { return nil }  // beyond any real chunk: a smuggling attempt
      value = value * 16 + digit
    }
    return digits > 0 ? value : nil
  }
}
