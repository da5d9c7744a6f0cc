import FathomRecords

/// HTTP/2 over cleartext TCP (prior knowledge or h2c upgrade): frames of both directions, HPACK
/// with a dynamic table per direction, streams paired by id, RST_STREAM and GOAWAY; gRPC service,
/// method and grpc-status from the path and the trailers.
final class HTTP2Parser {
  static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
  /// Streams in flight per connection; beyond it the oldest is reported as `unknown`.
  static let maxStreams = 256
  static let maxHeaderBlock = 256 * 1024

  struct Stream {
    var request: PendingRequest
    var response: ResponseInfo?
    var isGRPC = false
    var grpcStatus: Int32?
    var grpcMessage = ""
    var httpStatus: Int32?
    var clientDone = false
  }

  /// Frame reading state of one direction.
  struct Direction {
    var decoder = HPACKDecoder()
    var header: [UInt8] = []
    /// Payload bytes of the current frame still to come.
    var remaining = 0
    var frameType: UInt8 = 0
    var frameFlags: UInt8 = 0
    var streamID: UInt32 = 0
    var frameStart: Int64 = 0
    var frameSequence: UInt32 = 0
    /// Payload of a HEADERS/CONTINUATION/PUSH_PROMISE/RST_STREAM/GOAWAY frame being collected.
    var payload: [UInt8] = []
    var collecting = false
    /// Header block spread over HEADERS + CONTINUATION frames.
    var block: [UInt8] = []
    var blockStream: UInt32 = 0
    var blockEndsStream = false
    var blockStart: Int64 = 0
    var blockSequence: UInt32 = 0
    var prefaceLeft = 0
    var broken = false
  }

  var client = Direction()
  var server = Direction()
  var streams: [UInt32: Stream] = [:]
  var order: [UInt32] = []

  init(expectPreface: Bool) {
    client.prefaceLeft = expectPreface ? Self.preface.count : 0
    client.decoder.tolerateMissingEntries = !expectPreface
    server.decoder.tolerateMissingEntries = !expectPreface
  }

  /// True when `bytes` start with the client preface or plausibly with HTTP/2 frames (a capture
  /// that began after the preface): valid frame headers chained to the end, one of them HEADERS.
  static func looksLikeHTTP2(_ bytes: UnsafeRawBufferPointer) -> (Bool, preface: Bool) {
    if bytes.starts(with: preface.prefix(min(bytes.count, preface.count))) && bytes.count >= 4 { return (true, true) }
    // A capture begun mid-connection: whole control frames (SETTINGS, PING, WINDOW_UPDATE,
    // PRIORITY), then a client HEADERS frame on an odd stream with only HEADERS flags, all within
    // the default maximum frame size.
    var offset = 0
    while offset + 9 <= bytes.count {
      let length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
      let type = bytes[offset + 3]
      let flags = bytes[offset + 4]
      let stream =
        UInt32(bytes[offset + 5]) << 24 | UInt32(bytes[offset + 6]) << 16 | UInt32(bytes[offset + 7]) << 8
        | UInt32(bytes[offset + 8])
      guard length <= 16_384, stream & 0x8000_0000 == 0 else { return (false, false) }
      switch type {
      case 1:
        return (flags & ~0x2D == 0 && length > 0 && stream & 1 == 1, false)
      case 4 where stream == 0 && length % 6 == 0 && flags & ~0x1 == 0,
        6 where stream == 0 && length == 8 && flags & ~0x1 == 0,
        8 where length == 4 && flags == 0,
        2 where length == 5 && stream != 0:
        offset += 9 + length
      default:
        return (false, false)
      }
    }
    return (false, false)
  }

  /// Takes over the HTTP/1 request of an h2c upgrade as stream 1 (RFC 7540, 3.2).
  func adoptUpgradedRequest(_ request: PendingRequest) {
    var stream = Stream(request: request)
    stream.request.transactionID = 1
    stream.clientDone = true
    streams[1] = stream
    order.append(1)
  }

  func feed(
    _ data: UnsafeRawBufferPointer, fromClient: Bool, sequence: UInt32, nanos: Int64, identity: FlowIdentity,
    config: RequestConfig, sink: inout RequestSink
  ) {
    var direction = Direction()
    if fromClient { swap(&direction, &client) } else { swap(&direction, &server) }
    defer { if fromClient { swap(&direction, &client) } else { swap(&direction, &server) } }
    guard !direction.broken else { return }
    var offset = 0
    if direction.prefaceLeft > 0 {
      let skip = min(direction.prefaceLeft, data.count)
      direction.prefaceLeft -= skip
      offset = skip
    }
    while offset < data.count {
      if direction.remaining == 0 && !direction.collecting {
        // Frame header, possibly split across segments.
        let need = 9 - direction.header.count
        let take = min(need, data.count - offset)
        if direction.header.isEmpty {
          direction.frameStart = nanos
          direction.frameSequence = sequence &+ UInt32(truncatingIfNeeded: offset)
        }
        direction.header.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[offset..<(offset + take)]))
        offset += take
        guard direction.header.count == 9 else { return }
        let h = direction.header
        direction.header.removeAll(keepingCapacity: true)
        let length = Int(h[0]) << 16 | Int(h[1]) << 8 | Int(h[2])
        direction.frameType = h[3]
        direction.frameFlags = h[4]
        direction.streamID = (UInt32(h[5]) << 24 | UInt32(h[6]) << 16 | UInt32(h[7]) << 8 | UInt32(h[8])) & 0x7FFF_FFFF
        guard length <= Self.maxHeaderBlock else {
          sink.parseFailures += 1
          direction.broken = true
          return
        }
        direction.remaining = length
        // Header-carrying and control frames are collected; DATA and the rest are skipped by length.
        switch direction.frameType {
        case 1, 3, 5, 7, 9: direction.collecting = true
        default: direction.collecting = false
        }
        direction.payload.removeAll(keepingCapacity: true)
        if length == 0 {
          frameComplete(&direction, fromClient: fromClient, identity: identity, config: config, sink: &sink)
        }
        continue
      }
      let take = min(direction.remaining, data.count - offset)
      if direction.collecting {
        direction.payload.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[offset..<(offset + take)]))
      } else if direction.frameType == 0, let index = streams.index(forKey: direction.streamID) {
        if fromClient {
          streams.values[index].request.bytes += UInt64(take)
        } else {
          streams.values[index].response?.bytes += UInt64(take)
        }
      }
      direction.remaining -= take
      offset += take
      if direction.remaining == 0 {
        frameComplete(&direction, fromClient: fromClient, identity: identity, config: config, sink: &sink)
      }
      if direction.broken { return }
    }
  }

  private func frameComplete(
    _ direction: inout Direction, fromClient: Bool, identity: FlowIdentity, config: RequestConfig,
    sink: inout RequestSink
  ) {
    direction.collecting = false
    let flags = direction.frameFlags
    let id = direction.streamID
    switch direction.frameType {
    case 0:  // DATA
      if flags & 0x1 != 0 {
        streamEnded(id, fromClient: fromClient, nanos: direction.frameStart, identity: identity, sink: &sink)
      }
    case 1, 5:  // HEADERS, PUSH_PROMISE
      var fragment = direction.payload[...]
      if flags & 0x8 != 0 {  // PADDED
        guard let pad = fragment.first, Int(pad) < fragment.count else { return fail(&direction, &sink) }
        fragment = fragment.dropFirst().dropLast(Int(pad))
      }
      if direction.frameType == 5 {
        guard fragment.count >= 4 else { return fail(&direction, &sink) }
        fragment = fragment.dropFirst(4)  // promised stream id
      } else if flags & 0x20 != 0 {  // PRIORITY
        guard fragment.count >= 5 else { return fail(&direction, &sink) }
        fragment = fragment.dropFirst(5)
      }
      direction.block = Array(fragment)
      direction.blockStream = direction.frameType == 5 ? 0 : id
      direction.blockEndsStream = flags & 0x1 != 0
      direction.blockStart = direction.frameStart
      direction.blockSequence = direction.frameSequence
      if flags & 0x4 != 0 {
        headerBlockComplete(&direction, fromClient: fromClient, identity: identity, config: config, sink: &sink)
      }
    case 9:  // CONTINUATION
      direction.block += direction.payload
      guard direction.block.count <= Self.maxHeaderBlock else { return fail(&direction, &sink) }
      if flags & 0x4 != 0 {
        headerBlockComplete(&direction, fromClient: fromClient, identity: identity, config: config, sink: &sink)
      }
    case 3:  // RST_STREAM: the stream ends now; an error code says whose fault
      guard var stream = streams.removeValue(forKey: id) else { return }
      order.removeAll { $0 == id }
      let code =
        direction.payload.count >= 4
        ? Int32(direction.payload[0]) << 24 | Int32(direction.payload[1]) << 16 | Int32(direction.payload[2]) << 8
          | Int32(direction.payload[3]) : 0
      if stream.response == nil {
        stream.response = ResponseInfo(
          startNanos: direction.frameStart, endNanos: direction.frameStart, sequence: nil,
          status: code == 0 ? .ok : fromClient ? .clientError : .serverError, code: nil)
        stream.response?.texts[.errorMessage] = "RST_STREAM \(code)"
      }
      emit(stream, identity: identity, sink: &sink)
    case 7:  // GOAWAY: streams above the last id will not be processed
      guard direction.payload.count >= 4 else { return }
      let last =
        (UInt32(direction.payload[0]) << 24 | UInt32(direction.payload[1]) << 16
          | UInt32(direction.payload[2]) << 8 | UInt32(direction.payload[3])) & 0x7FFF_FFFF
      for id in order where id > last {
        if var stream = streams.removeValue(forKey: id) {
          stream.response = ResponseInfo(
            startNanos: direction.frameStart, endNanos: direction.frameStart, sequence: nil, status: .serverError,
            code: nil)
          stream.response!.texts.set(.errorMessage, "GOAWAY")
          emit(stream, identity: identity, sink: &sink)
        }
      }
      order.removeAll { $0 > last }
    default:
      break
    }
  }

  private func fail(_ direction: inout Direction, _ sink: inout RequestSink) {
    sink.parseFailures += 1
    direction.broken = true
  }

  private func headerBlockComplete(
    _ direction: inout Direction, fromClient: Bool, identity: FlowIdentity, config: RequestConfig,
    sink: inout RequestSink
  ) {
    var fields: [(String, String)] = []
    do {
      try direction.block.withUnsafeBytes { raw in
        try direction.decoder.decode(raw) { name, value in
          if name.first == UInt8(ascii: ":") || Self.interesting.contains(name) {
            fields.append((String(decoding: name, as: UTF8.self), fieldText(value[...], limit: config.maxFieldBytes)))
          }
        }
      }
    } catch {
      // The dynamic table can no longer be trusted: this direction's later blocks are unreadable.
      return fail(&direction, &sink)
    }
    let id = direction.blockStream
    direction.block.removeAll(keepingCapacity: true)
    guard id != 0 else { return }  // PUSH_PROMISE: decoded only to keep the table in step
    if fromClient {
      if streams[id] == nil {
        var request = PendingRequest(startNanos: direction.blockStart, sequence: direction.blockSequence)
        request.texts.set(.version, "2")
        request.transactionID = id
        var stream = Stream(request: request)
        for (name, value) in fields {
          switch name {
          case ":method": stream.request.texts[.method] = value
          case ":path":
            stream.request.texts[.resource] = value
            stream.request.texts[.endpoint] = String(value.prefix { $0 != "?" })
          case ":authority", "host": stream.request.texts[.domain] = value
          case "content-type": stream.isGRPC = value.hasPrefix("application/grpc")
          case "x-request-id": stream.request.texts[.requestID] = value
          case "user-agent": stream.request.texts[.userAgent] = value
          case "x-forwarded-for": stream.request.texts[.forwardedFor] = value
          case "traceparent":
            let parts = value.split(separator: "-")
            if parts.count >= 3 {
              (stream.request.texts[.traceID], stream.request.texts[.spanID]) = (String(parts[1]), String(parts[2]))
            }
          default: break
          }
        }
        if order.count >= Self.maxStreams, let oldest = order.first, let evicted = streams.removeValue(forKey: oldest) {
          order.removeFirst()
          sink.evicted += 1
          sink.emit(
            evicted.isGRPC ? .grpc : .http2, identity, request: evicted.request, response: nil, status: .unknown)
        }
        streams[id] = stream
        order.append(id)
      }
      if direction.blockEndsStream { streams[id]?.clientDone = true }
      return
    }
    guard var stream = streams[id] else { return }
    for (name, value) in fields {
      switch name {
      case ":status": stream.httpStatus = Int32(value)
      case "grpc-status": stream.grpcStatus = Int32(value)
      case "grpc-message": stream.grpcMessage = value
      case "content-type": if value.hasPrefix("application/grpc") { stream.isGRPC = true }
      case "x-request-id": stream.response?.texts[.responseRequestID] = value
      default: break
      }
    }
    if stream.response == nil {
      stream.response = ResponseInfo(
        startNanos: direction.blockStart, endNanos: direction.blockStart, sequence: direction.blockSequence,
        status: .ok, code: nil)
      stream.response?.texts.set(.version, "2")
      for (name, value) in fields where name == "x-request-id" { stream.response?.texts[.responseRequestID] = value }
    }
    streams[id] = stream
    if direction.blockEndsStream {
      streamEnded(id, fromClient: false, nanos: direction.blockStart, identity: identity, sink: &sink)
    }
  }

  static let interesting: Set<[UInt8]> = Set(
    [
      "content-type", "grpc-status", "grpc-message", "x-request-id", "user-agent", "x-forwarded-for", "traceparent",
      "host",
    ]
    .map { Array($0.utf8) })

  private func streamEnded(
    _ id: UInt32, fromClient: Bool, nanos: Int64, identity: FlowIdentity, sink: inout RequestSink
  ) {
    if fromClient {
      streams[id]?.clientDone = true
      return
    }
    guard var stream = streams.removeValue(forKey: id) else { return }
    order.removeAll { $0 == id }
    stream.response?.endNanos = nanos
    emit(stream, identity: identity, sink: &sink)
  }

  /// gRPC status classes (REFERENCE.md): CANCELLED, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
  /// PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED are client errors.
  static func grpcStatusClass(_ code: Int32) -> RequestStatus {
    switch code {
    case 0: .ok
    case 1, 3, 5, 6, 7, 9, 11, 16: .clientError
    default: .serverError
    }
  }

  private func emit(_ stream: Stream, identity: FlowIdentity, sink: inout RequestSink) {
    var response = stream.response
    if response != nil {
      if stream.isGRPC, let grpc = stream.grpcStatus {
        response!.code = grpc
        response!.status = Self.grpcStatusClass(grpc)
        if grpc != 0 { response!.texts[.errorMessage] = stream.grpcMessage }
      } else if let http = stream.httpStatus {
        response!.code = http
        if response!.texts.isEmpty(.errorMessage) {
          response!.status = http >= 500 ? .serverError : http >= 400 ? .clientError : .ok
        }
      }
    }
    sink.emit(stream.isGRPC ? .grpc : .http2, identity, request: stream.request, response: response)
  }

  func gap(fromClient: Bool) {
    // Frames cannot be found again after a gap, and HPACK state is lost with the missing bytes.
    if fromClient { client.broken = true } else { server.broken = true }
  }

  func finish(unanswered: RequestStatus, identity: FlowIdentity, sink: inout RequestSink) {
    for id in order {
      guard let stream = streams[id] else { continue }
      if stream.response != nil {
        emit(stream, identity: identity, sink: &sink)  // headers came, the end of the stream did not
      } else {
        sink.emit(stream.isGRPC ? .grpc : .http2, identity, request: stream.request, response: nil, status: unanswered)
      }
    }
    streams.removeAll()
    order.removeAll()
  }
}
