/// In-order delivery of one direction of a TCP connection, with bounded buffering of segments
/// that arrive early. When the buffer is full (or a segment never comes) the stream declares a
/// gap and continues from the earliest buffered byte; the parser resynchronises.
struct TCPStream {
  private(set) var initialized = false
  /// Sequence number of the next byte to deliver.
  private(set) var nextSequence: UInt32 = 0
  private var held: [(sequence: UInt32, bytes: [UInt8], nanos: Int64)] = []
  private var heldBytes = 0

  @inline(__always) static func before(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }

  /// The common case: the segment is the next in order and nothing is held. Then the stream
  /// advances and the caller parses the bytes in place; otherwise `push` does the work.
  @inline(__always) mutating func takeInOrder(sequence: UInt32, count: Int) -> Bool {
    guard held.isEmpty, count > 0 else { return false }
    if !initialized {
      initialized = true
      nextSequence = sequence
    }
    guard sequence == nextSequence else { return false }
    nextSequence = sequence &+ UInt32(truncatingIfNeeded: count)
    return true
  }

  /// The handshake tells where data starts, so a first segment that arrives early is held.
  mutating func start(at sequence: UInt32) {
    guard !initialized else { return }
    initialized = true
    nextSequence = sequence
  }

  enum Event {
    /// Bytes in order, with the sequence number of the first and the capture time.
    case data(UnsafeRawBufferPointer, sequence: UInt32, nanos: Int64)
    /// Bytes were lost before the next delivery.
    case gap
  }

  /// Accepts a segment and calls `deliver` for everything now deliverable, in order.
  mutating func push(
    sequence: UInt32, payload: UnsafeRawBufferPointer, nanos: Int64, config: RequestConfig,
    dropped: inout UInt64, deliver: (Event) -> Void
  ) {
    guard payload.count > 0 else { return }
    if !initialized {
      initialized = true
      nextSequence = sequence
    }
    var start = sequence
    var bytes = payload
    if Self.before(start, nextSequence) {
      // Overlaps what was delivered: keep only the new tail, if any.
      let overlap = Int(nextSequence &- start)
      guard overlap < bytes.count else { return }
      bytes = UnsafeRawBufferPointer(rebasing: bytes[overlap...])
      start = nextSequence
    }
    if start == nextSequence {
      deliver(.data(bytes, sequence: start, nanos: nanos))
      nextSequence = start &+ UInt32(truncatingIfNeeded: bytes.count)
      drainHeld(deliver: deliver)
      return
    }
    // Early: hold a copy, bounded.
    if held.count >= config.maxBufferedSegments || heldBytes + bytes.count > config.maxBufferedBytes {
      if held.isEmpty {
        dropped += 1
        deliver(.gap)
        nextSequence = start
        deliver(.data(bytes, sequence: start, nanos: nanos))
        nextSequence = start &+ UInt32(truncatingIfNeeded: bytes.count)
        return
      }
      // Give up on the missing bytes: continue from the earliest held segment.
      deliver(.gap)
      nextSequence = held.min { Self.before($0.sequence, $1.sequence) }!.sequence
      drainHeld(deliver: deliver)
      if Self.before(start, nextSequence) || start == nextSequence {
        push(sequence: start, payload: bytes, nanos: nanos, config: config, dropped: &dropped, deliver: deliver)
        return
      }
      if held.count >= config.maxBufferedSegments || heldBytes + bytes.count > config.maxBufferedBytes {
        dropped += 1
        return
      }
    }
    held.append((start, Array(bytes), nanos))
    heldBytes += bytes.count
  }

  private mutating func drainHeld(deliver: (Event) -> Void) {
    while !held.isEmpty {
      guard let index = held.firstIndex(where: { !Self.before(nextSequence, $0.sequence) }) else { return }
      let segment = held.remove(at: index)
      heldBytes -= segment.bytes.count
      let end = segment.sequence &+ UInt32(truncatingIfNeeded: segment.bytes.count)
      guard Self.before(nextSequence, end) else { continue }  // already delivered
      let skip = Int(nextSequence &- segment.sequence)
      segment.bytes.withUnsafeBytes { raw in
        deliver(.data(UnsafeRawBufferPointer(rebasing: raw[skip...]), sequence: nextSequence, nanos: segment.nanos))
      }
      nextSequence = end
    }
  }

  /// Delivers what is held, declaring the gaps (end of the flow).
  mutating func flush(deliver: (Event) -> Void) {
    while let earliest = held.min(by: { Self.before($0.sequence, $1.sequence) }) {
      deliver(.gap)
      nextSequence = earliest.sequence
      drainHeld(deliver: deliver)
    }
  }
}
