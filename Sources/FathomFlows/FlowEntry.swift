import FathomRecords
import FathomWire

/// TCP connection state as the flow table tracks it.
enum TCPState: UInt8, Comparable {
  /// No handshake seen (UDP, ICMP, or TCP picked up mid-stream before any packet was judged).
  case none
  case synSent
  case synReceived
  case established
  /// One side sent FIN.
  case closing
  /// Both sides sent FIN.
  case closed
  case reset

  static func < (a: TCPState, b: TCPState) -> Bool { a.rawValue < b.rawValue }
}

/// Sequence-space bookkeeping of one direction, to tell retransmissions from out-of-order segments.
struct SequenceTracker {
  var initialized = false
  /// One past the highest payload byte seen.
  var nextSequence: UInt32 = 0
  /// The lowest sequence number seen: bytes below it were sent before the capture saw the flow,
  /// so they are new to us, not retransmitted.
  var lowestSequence: UInt32 = 0
  /// Gaps left by segments that arrived ahead of their predecessors; at most `maxGaps`.
  var gapStarts = SIMD4<UInt32>()
  var gapEnds = SIMD4<UInt32>()
  var gapCount = 0
  static let maxGaps = 4

  enum Verdict { case inOrder, retransmission, outOfOrder, keepalive }

  /// Payload bytes of the last observed segment not seen before.
  private(set) var newBytes = 0

  @inline(__always) static func before(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }

  mutating func observe(sequence: UInt32, length: Int) -> Verdict {
    let end = sequence &+ UInt32(truncatingIfNeeded: length)
    newBytes = length
    guard initialized else {
      initialized = true
      nextSequence = end
      lowestSequence = sequence
      return .inOrder
    }
    if Self.before(sequence, lowestSequence) {
      // Earlier data than anything seen (a capture that began mid-stream): new, not repeated.
      let below = min(Int(lowestSequence &- sequence), length)
      if Self.before(end, lowestSequence) { addGap(end, lowestSequence) }
      newBytes = below + (below < length ? fillGaps(lowestSequence, end) : 0)
      if Self.before(nextSequence, end) {
        newBytes += Int(end &- nextSequence)
        nextSequence = end
      }
      lowestSequence = sequence
      return .inOrder
    }
    if !Self.before(sequence, nextSequence) {
      if sequence != nextSequence { addGap(nextSequence, sequence) }
      nextSequence = end
      return .inOrder
    }
    // A keepalive probe resends the byte before snd.nxt.
    if length <= 1 && sequence == nextSequence &- 1 {
      newBytes = 0
      return .keepalive
    }
    let filled = fillGaps(sequence, end)
    newBytes = filled
    if Self.before(nextSequence, end) {
      newBytes += Int(end &- nextSequence)
      nextSequence = end
    }
    return filled > 0 ? .outOfOrder : .retransmission
  }

  private mutating func addGap(_ start: UInt32, _ end: UInt32) {
    if gapCount == Self.maxGaps {
      // Forget the oldest gap; a late segment for it will count as a retransmission.
      removeGap(at: 0)
    }
    gapStarts[gapCount] = start
    gapEnds[gapCount] = end
    gapCount += 1
  }

  /// Bytes of [start, end) that fall into recorded gaps; each gap shrinks by the overlap.
  private mutating func fillGaps(_ start: UInt32, _ end: UInt32) -> Int {
    var filled = 0
    var index = 0
    while index < gapCount {
      let gapStart = gapStarts[index]
      let gapEnd = gapEnds[index]
      guard Self.before(start, gapEnd) && Self.before(gapStart, end) else {
        index += 1
        continue
      }
      let overlapStart = Self.before(gapStart, start) ? start : gapStart
      let overlapEnd = Self.before(end, gapEnd) ? end : gapEnd
      filled += Int(overlapEnd &- overlapStart)
      let coversStart = !Self.before(gapStart, start)
      let coversEnd = !Self.before(end, gapEnd)
      if coversStart && coversEnd {
        removeGap(at: index)
        continue
      }
      if coversStart {
        gapStarts[index] = end
      } else if coversEnd {
        gapEnds[index] = start
      } else {
        gapEnds[index] = start
        if gapCount < Self.maxGaps {
          gapStarts[gapCount] = end
          gapEnds[gapCount] = gapEnd
          gapCount += 1
        }
      }
      index += 1
    }
    return filled
  }

  private mutating func removeGap(at index: Int) {
    var i = index
    while i + 1 < gapCount {
      gapStarts[i] = gapStarts[i + 1]
      gapEnds[i] = gapEnds[i + 1]
      i += 1
    }
    gapCount -= 1
  }
}

/// Per-direction state: counters of the current report interval plus TCP bookkeeping.
struct SideState {
  var stats = DirectionStats()
  var sequence = SequenceTracker()
  var synSeen = false
  var initialSequence: UInt32 = 0
  var finSeen = false
  /// Sequence number the peer acknowledges once it has received this side's FIN.
  var finAckSequence: UInt32 = 0
  var finAcknowledged = false
  /// Sent at least one packet during the flow's life (stats reset every report interval).
  var seen = false
  var sentPayload = false
  /// Last payload segment not yet acknowledged by the peer, for SRT.
  var unackedEnd: UInt32 = 0
  var unackedNanos: Int64 = 0
  var awaitingAck = false
  var lastDataNanos: Int64 = 0
}

/// Everything the table keeps about one flow.
struct FlowEntry {
  var key: FlowKey
  var inUse = true
  var startNanos: Int64
  var lastNanos: Int64
  var intervalStartNanos: Int64
  /// Side (0 = A, 1 = B) that is the client.
  var clientSide: Int
  var orientationGuessed: Bool
  var sides = (SideState(), SideState())
  var state = TCPState.none
  var stateAtReset = TCPState.none
  var resetBy = -1
  var firstFinBy = -1
  /// Times of the first SYN and the first SYN/ACK, nil until seen.
  var synNanos: Int64?
  var synAckNanos: Int64?
  var rttClient: UInt32 = 0
  var rttServer: UInt32 = 0
  var rtt: UInt32 = 0
  var synCount: UInt32 = 0
  var synAckCount: UInt32 = 0
  var synRetransmissions: UInt32 = 0
  var synAckRetransmissions: UInt32 = 0
  /// SYN/ACKs repeated after the client's handshake ACK (the server never took the connection
  /// off its queue) and SYNs repeated after a SYN/ACK: the signatures of a full accept queue.
  var synAcksAfterHandshake: UInt32 = 0
  var synsAfterSynAck: UInt32 = 0
  var srt = LatencyStats()
  var art = LatencyStats()
  var cit = LatencyStats()
  var lastDataSide = -1
  var icmpUnreachable: (type: UInt8, code: UInt8)?
  var reusedPorts = false
  var reportIndex: UInt32 = 0
  /// Unique per flow table, never reused; links later stages' state to this flow.
  var flowID: UInt64 = 0
  var tunnelID: UInt32?

  init(key: FlowKey, now: Int64, clientSide: Int, guessed: Bool, tunnelID: UInt32?) {
    self.key = key
    startNanos = now
    lastNanos = now
    intervalStartNanos = now
    self.clientSide = clientSide
    orientationGuessed = guessed
    self.tunnelID = tunnelID
  }

  @inline(__always) func side(_ index: Int) -> SideState { index == 0 ? sides.0 : sides.1 }

  @inline(__always) mutating func withSide<R>(_ index: Int, _ body: (inout SideState) -> R) -> R {
    index == 0 ? body(&sides.0) : body(&sides.1)
  }

  var bothSidesSeen: Bool { sides.0.seen && sides.1.seen }
}
