import FathomRecords

/// Reads RESP2/RESP3 values from a byte stream one piece at a time, without buffering bulk
/// payloads: only the first few strings of a value are kept (the command and its key, or a reply's
/// text), bounded.
struct RESPReader {
  /// Elements still expected at each open aggregate level.
  private var remaining: [Int] = []
  private var line: [UInt8] = []
  private var bulkLeft = 0
  private var collectingBulk = false
  private(set) var strings: [String] = []
  private var bulkText: [UInt8] = []
  /// Type byte of the top-level value.
  private(set) var topType: UInt8 = 0
  private(set) var bytes: UInt64 = 0
  private var started = false

  /// Command, key and one more argument (CLIENT REPLY OFF needs the third).
  static let keptStrings = 3

  enum Outcome { case needMore, complete, invalid }

  mutating func reset() { self = RESPReader() }

  /// Consumes bytes until one top-level value completes; `consumed` tells how many were used.
  mutating func feed(_ data: UnsafeRawBufferPointer, consumed: inout Int, config: RequestConfig) -> Outcome {
    var offset = 0
    defer {
      consumed = offset
      bytes += UInt64(offset)
    }
    while offset < data.count {
      if bulkLeft > 0 {
        let take = min(bulkLeft, data.count - offset)
        if collectingBulk && bulkLeft > 2 {
          let content = min(take, bulkLeft - 2)
          if bulkText.count < config.maxFieldBytes {
            bulkText.append(
              contentsOf: UnsafeRawBufferPointer(rebasing: data[offset..<(offset + content)]).prefix(
                config.maxFieldBytes - bulkText.count))
          }
        }
        bulkLeft -= take
        offset += take
        if bulkLeft == 0 {
          if collectingBulk { strings.append(String(decoding: bulkText, as: UTF8.self)) }
          bulkText.removeAll(keepingCapacity: true)
          collectingBulk = false
          if elementDone() { return .complete }
        }
        continue
      }
      guard let newline = UnsafeRawBufferPointer(rebasing: data[offset...]).firstIndex(of: 0x0A) else {
        line.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[offset...]))
        offset = data.count
        if line.count > config.maxHeaderBytes { return .invalid }
        return .needMore
      }
      line.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[offset..<(offset + newline)]))
      offset += newline + 1
      if line.last == 0x0D { line.removeLast() }
      let current = line
      line.removeAll(keepingCapacity: true)
      guard let type = current.first else { continue }
      if !started {
        started = true
        topType = type
      }
      let text = current.dropFirst()
      switch type {
      case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
        guard let count = Self.integer(text) else { return .invalid }
        let elements = (type == UInt8(ascii: "%") || type == UInt8(ascii: "|")) ? count * 2 : count
        if elements <= 0 {
          if elementDone() { return .complete }
        } else {
          guard remaining.count < 32, elements < 1 << 24 else { return .invalid }
          // An attribute precedes the value it annotates: one more element at this level.
          if type == UInt8(ascii: "|"), !remaining.isEmpty { remaining[remaining.count - 1] += 1 }
          remaining.append(elements)
        }
      case UInt8(ascii: "$"), UInt8(ascii: "="), UInt8(ascii: "!"):
        guard let length = Self.integer(text) else { return .invalid }
        if length < 0 {
          if elementDone() { return .complete }
        } else {
          bulkLeft = length + 2
          collectingBulk = strings.count < Self.keptStrings
          if type == UInt8(ascii: "!") { collectingBulk = true }
        }
      case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "_"), UInt8(ascii: ","),
        UInt8(ascii: "#"), UInt8(ascii: "("):
        if strings.count < Self.keptStrings { strings.append(fieldText(text, limit: config.maxFieldBytes)) }
        if elementDone() { return .complete }
      default:
        // Inline command ("PING", "SET k v"): only as a top-level request.
        guard remaining.isEmpty else { return .invalid }
        strings = current.split(separator: 0x20).prefix(Self.keptStrings).map {
          fieldText($0, limit: config.maxFieldBytes)
        }
        return .complete
      }
    }
    return .needMore
  }

  /// Marks one element complete; true when the top-level value is complete.
  private mutating func elementDone() -> Bool {
    while let last = remaining.last {
      if last > 1 {
        remaining[remaining.count - 1] = last - 1
        return false
      }
      remaining.removeLast()
    }
    return true
  }

  static func integer(_ bytes: ArraySlice<UInt8>) -> Int? {
    var value = 0
    var negative = false
    var digits = 0
    for byte in bytes {
      if byte == UInt8(ascii: "-") && digits == 0 && !negative {
        negative = true
        continue
      }
      guard byte >= 48 && byte <= 57, digits < 12 else { return nil }
      value = value * 10 + Int(byte - 48)
      digits += 1
    }
    guard digits > 0 else { return nil }
    return negative ? -value : value
  }
}

/// Redis on one connection: commands paired with replies in order (pipelining).
final class RedisSession {
  var request = RESPReader()
  var response = RESPReader()
  var requestStart: Int64 = 0
  var requestSequence: UInt32?
  var responseStart: Int64 = 0
  var responseSequence: UInt32?
  var pending: [PendingRequest] = []
  var stopped = (false, false)
  /// CLIENT REPLY OFF / SKIP: the server sends no replies (SKIP: for one more command).
  var repliesOff = false
  var skipReplies = 0

  func feed(
    _ data: UnsafeRawBufferPointer, fromClient: Bool, sequence: UInt32, nanos: Int64, identity: FlowIdentity,
    config: RequestConfig, sink: inout RequestSink
  ) {
    var offset = 0
    while offset < data.count {
      if fromClient ? stopped.0 : stopped.1 { return }
      let rest = UnsafeRawBufferPointer(rebasing: data[offset...])
      let here = sequence &+ UInt32(truncatingIfNeeded: offset)
      var used = 0
      let outcome =
        fromClient
        ? Self.read(
          &request, rest, start: &requestStart, sequence: &requestSequence, here: here, nanos: nanos, used: &used,
          config: config)
        : Self.read(
          &response, rest, start: &responseStart, sequence: &responseSequence, here: here, nanos: nanos, used: &used,
          config: config)
      offset += used
      switch outcome {
      case .needMore: return
      case .invalid:
        sink.parseFailures += 1
        if fromClient { stopped.0 = true } else { stopped.1 = true }
      case .complete:
        if fromClient {
          commandComplete(nanos: nanos, identity: identity, config: config, sink: &sink)
        } else {
          replyComplete(nanos: nanos, identity: identity, sink: &sink)
        }
      }
    }
  }

  /// Feeds one direction's reader, remembering where and when its value began.
  private static func read(
    _ reader: inout RESPReader, _ bytes: UnsafeRawBufferPointer, start: inout Int64, sequence: inout UInt32?,
    here: UInt32, nanos: Int64, used: inout Int, config: RequestConfig
  ) -> RESPReader.Outcome {
    if reader.bytes == 0 {
      start = nanos
      sequence = here
    }
    return reader.feed(bytes, consumed: &used, config: config)
  }

  private func commandComplete(nanos: Int64, identity: FlowIdentity, config: RequestConfig, sink: inout RequestSink) {
    var pendingRequest = PendingRequest(startNanos: requestStart, sequence: requestSequence)
    pendingRequest.texts[.method] = (request.strings.first ?? "").uppercased()
    pendingRequest.texts[.resource] = request.strings.count > 1 ? request.strings[1] : ""
    pendingRequest.bytes = request.bytes
    pendingRequest.lastNanos = nanos
    let mode =
      request.strings.count > 2 && pendingRequest.texts[.resource].uppercased() == "REPLY"
      ? request.strings[2].uppercased() : ""
    request.reset()
    if pendingRequest.texts[.method] == "CLIENT" && !mode.isEmpty {
      if mode == "ON" { repliesOff = false }
      if mode == "OFF" { repliesOff = true }
      if mode == "SKIP" { skipReplies = 2 }  // this command and the next get no reply
    }
    if skipReplies > 0 || repliesOff {
      // The server will not answer: the request is complete as it is.
      skipReplies = max(0, skipReplies - 1)
      sink.emit(.redis, identity, request: pendingRequest, response: nil, status: .ok)
      return
    }
    if pending.count >= config.maxPendingPerFlow {
      sink.evicted += 1
      sink.emit(.redis, identity, request: pending.takeOldest(), response: nil, status: .unknown)
    }
    pending.append(pendingRequest)
  }

  private func replyComplete(nanos: Int64, identity: FlowIdentity, sink: inout RequestSink) {
    let isError = response.topType == UInt8(ascii: "-") || response.topType == UInt8(ascii: "!")
    var info = ResponseInfo(
      startNanos: responseStart, endNanos: nanos, sequence: responseSequence,
      status: isError ? .serverError : .ok,
      code: nil)
    if isError { info.texts[.errorMessage] = response.strings.first ?? "" }
    info.bytes = response.bytes
    // Pushed messages answer no request: RESP3 pushes, and RESP2 pub/sub deliveries; further
    // subscription confirmations (one per channel) follow the first.
    let kind = response.topType == UInt8(ascii: "*") ? (response.strings.first ?? "").lowercased() : ""
    let subscription = kind.hasSuffix("subscribe")
    let headSubscribes = pending.first.map { $0.texts[.method].hasSuffix("SUBSCRIBE") } ?? false
    let isPush =
      response.topType == UInt8(ascii: ">") || kind == "message" || kind == "pmessage" || kind == "smessage"
      || (subscription && !headSubscribes)
    response.reset()
    if isPush { return }
    sink.emit(.redis, identity, request: pending.isEmpty ? nil : pending.takeOldest(), response: info)
  }

  func gap(fromClient: Bool) {
    // RESP cannot be resynchronised reliably mid-value: stop that direction.
    if fromClient { stopped.0 = true } else { stopped.1 = true }
  }

  func finish(nanos: Int64, unanswered: RequestStatus, identity: FlowIdentity, sink: inout RequestSink) {
    if response.bytes > 0, !pending.isEmpty {
      // The reply had begun when the flow ended (a large value cut by the capture): it answered.
      let isError = response.topType == UInt8(ascii: "-") || response.topType == UInt8(ascii: "!")
      var info = ResponseInfo(
        startNanos: responseStart, endNanos: nanos, sequence: responseSequence, status: isError ? .serverError : .ok,
        code: nil)
      info.bytes = response.bytes
      sink.emit(.redis, identity, request: pending.takeOldest(), response: info)
    }
    while !pending.isEmpty {
      sink.emit(.redis, identity, request: pending.takeOldest(), response: nil, status: unanswered)
    }
  }

  /// A RESP array of bulk strings ("*2\r\n$3\r\nGET") or a reply type on port 6379.
  static func looksLikeRESP(_ bytes: UnsafeRawBufferPointer, portHint: Bool) -> Bool {
    guard let first = bytes.first else { return false }
    if first == UInt8(ascii: "*"), bytes.count >= 4 {
      var index = 1
      while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 { index += 1 }
      return index > 1 && index + 2 < bytes.count && bytes[index] == 0x0D && bytes[index + 2] == UInt8(ascii: "$")
    }
    if portHint && "+-:$*_,#(%~>|".utf8.contains(first) { return true }
    // Inline commands ("PING\r\n", "SET k v\r\n") on the Redis port.
    guard portHint, let end = bytes.prefix(64).firstIndex(where: { $0 == 0x20 || $0 == 0x0D || $0 == 0x0A }), end > 0
    else { return false }
    return bytes[0..<end].allSatisfy { ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) }
  }
}
