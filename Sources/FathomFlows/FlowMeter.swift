import FathomRecords
import FathomWire

/// Where packets were captured: an interface, optionally in a network namespace.
public struct CapturePoint: Sendable, Equatable {
  public var interface: String
  public var netns: String
  public init(interface: String, netns: String = "") {
    self.interface = interface
    self.netns = netns
  }
}

/// Which flow a packet was accounted to, for the stages after the flow table.
public struct FlowPacketContext: Sendable {
  /// Slot of the flow in the table (reused after the flow ends; `flowID` is not).
  public var slot: Int
  public var flowID: UInt64
  /// The packet was sent by the flow's client.
  public var fromClient: Bool
}

/// Counters of the flow stage, reported with the summary.
public struct FlowCounters: Sendable, Equatable {
  public var flowsCreated: UInt64 = 0
  public var recordsEmitted: UInt64 = 0
  /// Flows removed from a full table before their time.
  public var evicted: UInt64 = 0
  /// ICMP errors that quoted a flow the table holds.
  public var icmpErrorsAttached: UInt64 = 0
  public init() {}
}

/// The flow table of one capture source: turns decoded packets into FlowLogs.
///
/// Open addressing with linear probing over a power-of-two slot array holding indexes into a
/// contiguous entry array, both allocated once at their bound: no allocation and no copy-on-write
/// check per packet. Timers run on packet time, once per second. Not thread-safe: one table per
/// capture thread.
public final class FlowMeter {
  public let config: FlowConfig
  public private(set) var counters = FlowCounters()
  /// Records ready for the next stage; the caller drains them (`drain`).
  public private(set) var output: [FlowLog] = []
  /// Whether flow records wait in `output`.
  public var hasOutput: Bool { !output.isEmpty }

  /// Entries 0..<entryCount are initialised; free ones are on `freeList`.
  private let entries: UnsafeMutablePointer<FlowEntry>
  private var entryCount = 0
  private var freeList: [Int32] = []
  private let slots: UnsafeMutablePointer<Int32>
  private let slotMask: Int
  private var activeCount = 0
  private var capturePoints: [CapturePoint] = []
  private var nextFlowID: UInt64 = 1
  private var now: Int64 = .min
  private var nextTick: Int64 = .min
  private let nanosPerSecond = 1_000_000_000.0

  public init(config: FlowConfig = FlowConfig()) {
    self.config = config
    var size = 1024
    while size < config.capacity * 2 { size <<= 1 }
    slots = TableMemory.allocate(Int32.self, count: size)
    slots.initialize(repeating: -1, count: size)
    slotMask = size - 1
    entries = TableMemory.allocate(FlowEntry.self, count: config.capacity)
    freeList.reserveCapacity(config.capacity)
  }

  deinit {
    entries.deinitialize(count: entryCount)
    TableMemory.free(entries)
    TableMemory.free(slots)
  }

  /// Registers a capture point and returns its id for `process`.
  public func addCapturePoint(_ point: CapturePoint) -> UInt32 {
    if let index = capturePoints.firstIndex(of: point) { return UInt32(index) }
    capturePoints.append(point)
    return UInt32(capturePoints.count - 1)
  }

  public var activeFlows: Int { activeCount }

  /// Moves the emitted records out.
  public func drain() -> [FlowLog] {
    defer { output.removeAll(keepingCapacity: true) }
    return output
  }

  /// Lends the records to `body` to change and pass on, then empties the buffer keeping its storage.
  public func drain(into body: (inout [FlowLog]) -> Void) {
    body(&output)
    output.removeAll(keepingCapacity: true)
  }

  // MARK: packets

  /// Accounts one decoded transport packet to its flow and tells which flow that was. Flows that
  /// ended because of this packet (timers, a new SYN on old ports) are in `output` already.
  @discardableResult
  public func process(_ packet: DecodedPacket, capturePoint: UInt32) -> FlowPacketContext {
    let time = packet.timestampNanos
    if time > now { now = time }
    if now >= nextTick { runTimers() }
    // An ICMP error marks the flow it quotes and is also a flow of its own (as Zeek and Arkime
    // count it), so no packet goes unaccounted.
    if packet.icmpIsError { attachICMPError(packet, capturePoint: capturePoint) }
    let (key, senderIsA) = FlowKey.make(
      source: packet.source, sourcePort: packet.sourcePort, destination: packet.destination,
      destinationPort: packet.destinationPort, ipProtocol: packet.ipProtocol, vlan: packet.vlanID,
      tunnel: packet.tunnelID, capturePoint: capturePoint)
    let sender = senderIsA ? 0 : 1
    var index = lookup(key)
    if index >= 0, packet.ipProtocol == 6, packet.tcpFlags.contains(.syn), !packet.tcpFlags.contains(.ack),
      startsNewConnection(index, sender: sender, sequence: packet.sequence)
    {
      let reused = entries[index].state < .closed
      finish(index, reason: .superseded)
      index = insert(key, packet: packet, sender: sender)
      entries[index].reusedPorts = reused
    } else if index < 0 {
      index = insert(key, packet: packet, sender: sender)
    }
    update(index, packet, sender: sender)
    return FlowPacketContext(
      slot: index, flowID: entries[index].flowID, fromClient: sender == entries[index].clientSide)
  }

  /// Flushes every flow (end of input): flows whose timeout has passed close as timed out, the
  /// rest as `in_progress`. `idleSeconds` tells that the capture went on that long after its last
  /// packet with nothing on the wire, so timeouts within it have expired.
  public func finishAll(idleSeconds: Double = 0) {
    if idleSeconds > 0 && now > .min { now += Int64(idleSeconds * nanosPerSecond) }
    for index in 0..<entryCount where entries[index].inUse {
      finish(index, reason: timedOut(index) ? .timeout : .endOfCapture)
    }
  }

  private func startsNewConnection(_ index: Int, sender: Int, sequence: UInt32) -> Bool {
    let entry = entries[index]
    switch entry.state {
    case .none: return false
    case .synSent, .synReceived:
      // A repeated SYN keeps its ISN; a different ISN from the same side is a new attempt.
      let client = entry.side(sender)
      return client.synSeen && client.initialSequence != sequence
    case .established, .closing, .closed, .reset:
      let side = entry.side(sender)
      return !(side.synSeen && side.initialSequence == sequence)
    }
  }

  private func insert(_ key: FlowKey, packet: DecodedPacket, sender: Int) -> Int {
    if activeCount >= config.capacity { evictOldest() }
    let (clientSide, guessed) = Orientation.initialClient(packet, sender: sender)
    var entry = FlowEntry(key: key, now: now, clientSide: clientSide, guessed: guessed, tunnelID: packet.tunnelID)
    entry.flowID = nextFlowID
    nextFlowID += 1
    let index: Int
    if let free = freeList.popLast() {
      index = Int(free)
      entries[index] = entry
    } else {
      index = entryCount
      (entries + index).initialize(to: entry)
      entryCount += 1
    }
    var slot = Int(truncatingIfNeeded: key.hashValue64) & slotMask
    while slots[slot] >= 0 { slot = (slot + 1) & slotMask }
    slots[slot] = Int32(index)
    activeCount += 1
    counters.flowsCreated += 1
    return index
  }

  @inline(__always)
  private func lookup(_ key: FlowKey) -> Int {
    var slot = Int(truncatingIfNeeded: key.hashValue64) & slotMask
    while true {
      let index = Int(slots[slot])
      if index < 0 { return -1 }
      if entries[index].key == key { return index }
      slot = (slot + 1) & slotMask
    }
  }

  /// Removes a flow's slot with backward-shift deletion (no tombstones, probes stay short).
  private func removeSlot(of index: Int) {
    let key = entries[index].key
    var slot = Int(truncatingIfNeeded: key.hashValue64) & slotMask
    while Int(slots[slot]) != index { slot = (slot + 1) & slotMask }
    var hole = slot
    var next = (hole + 1) & slotMask
    while slots[next] >= 0 {
      let home = Int(truncatingIfNeeded: entries[Int(slots[next])].key.hashValue64) & slotMask
      // Move the entry back if its home is not within (hole, next].
      let distanceToHome = (next - home) & slotMask
      let distanceToHole = (next - hole) & slotMask
      if distanceToHome >= distanceToHole {
        slots[hole] = slots[next]
        hole = next
      }
      next = (next + 1) & slotMask
    }
    slots[hole] = -1
  }

  private func update(_ index: Int, _ packet: DecodedPacket, sender: Int) {
    let time = packet.timestampNanos
    entries[index].lastNanos = max(entries[index].lastNanos, time)
    let payload = packet.payloadLength
    entries[index].withSide(sender) { side in
      side.seen = true
      side.stats.packets &+= UInt64(packet.frameCount)
      side.stats.l3Bytes &+= UInt64(packet.l3Length)
      side.stats.frameBytes &+= UInt64(packet.frameBytes)
      side.stats.payloadBytes &+= UInt64(payload)
      if payload > 0 { side.sentPayload = true }
      if packet.ipProtocol != 6 { side.stats.uniquePayloadBytes &+= UInt64(payload) }
    }
    if packet.ipProtocol == 6 {
      TCPTracking.update(&entries[index], packet, sender: sender)
    } else if payload > 0 {
      TCPTracking.updateResponseTimes(&entries[index], sender: sender, time: time)
    }
  }

  // MARK: ICMP errors

  /// Attaches an ICMP error to the TCP/UDP flow it quotes, when the table holds that flow.
  private func attachICMPError(_ packet: DecodedPacket, capturePoint: UInt32) {
    let quoted = packet.quoted
    guard quoted.ipProtocol == 6 || quoted.ipProtocol == 17 else { return }
    let (key, _) = FlowKey.make(
      source: quoted.source, sourcePort: quoted.sourcePort, destination: quoted.destination,
      destinationPort: quoted.destinationPort, ipProtocol: quoted.ipProtocol, vlan: packet.vlanID,
      tunnel: packet.tunnelID, capturePoint: capturePoint)
    let index = lookup(key)
    guard index >= 0 else { return }
    counters.icmpErrorsAttached += 1
    let isUnreachable =
      (packet.ipVersion == 4 && packet.icmpType == 3) || (packet.ipVersion == 6 && packet.icmpType == 1)
    if isUnreachable {
      entries[index].icmpUnreachable = (packet.icmpType, packet.icmpCode)
      entries[index].lastNanos = max(entries[index].lastNanos, packet.timestampNanos)
    }
  }

  // MARK: timers

  private func runTimers() {
    nextTick = now + 1_000_000_000
    let interval = config.reportIntervalSeconds.map { Int64($0 * nanosPerSecond) }
    for index in 0..<entryCount where entries[index].inUse {
      if timedOut(index) {
        finish(index, reason: .timeout)
      } else if let interval, interval > 0, now - entries[index].intervalStartNanos >= interval {
        emit(index, closeType: .forcedReport, status: .ok)
        resetInterval(index)
      }
    }
  }

  private func timeoutNanos(_ entry: FlowEntry) -> Int64 {
    let seconds: Double
    if entry.key.ipProtocol != 6 {
      seconds = entry.bothSidesSeen ? config.datagramTimeout : config.singleDirectionTimeout
    } else {
      switch entry.state {
      case .reset:
        seconds = entry.stateAtReset >= .established ? config.closingAfterResetTimeout : config.openingAfterResetTimeout
      case .closed:
        // Until the last FIN is acknowledged the peer may still retransmit: keep waiting.
        let acknowledged = entry.sides.0.finAcknowledged && entry.sides.1.finAcknowledged
        seconds = acknowledged ? config.closedByFinTimeout : config.closingTimeout
      case .closing: seconds = config.closingTimeout
      case .synSent, .synReceived: seconds = config.openingTimeout
      case .none, .established:
        seconds = entry.bothSidesSeen ? config.establishedTimeout : config.singleDirectionTimeout
      }
    }
    return Int64(seconds * nanosPerSecond)
  }

  private func timedOut(_ index: Int) -> Bool {
    now - entries[index].lastNanos >= timeoutNanos(entries[index])
  }

  /// Evicts the least recently active sixteenth of the table (at least one flow), so a full table
  /// costs one scan per many insertions rather than one per packet.
  private func evictOldest() {
    var oldest = Int64.max
    var newest = Int64.min
    for index in 0..<entryCount where entries[index].inUse {
      oldest = min(oldest, entries[index].lastNanos)
      newest = max(newest, entries[index].lastNanos)
    }
    let threshold = oldest + max(1, (newest - oldest) / 16)
    for index in 0..<entryCount where entries[index].inUse && entries[index].lastNanos < threshold {
      counters.evicted += 1
      finish(index, reason: .evicted)
    }
  }

  // MARK: records

  enum EndReason { case timeout, endOfCapture, evicted, superseded }

  private func finish(_ index: Int, reason: EndReason) {
    let (closeType, status) = CloseClassifier.classify(entries[index], reason: reason)
    emit(index, closeType: closeType, status: status)
    removeSlot(of: index)
    entries[index].inUse = false
    freeList.append(Int32(index))
    activeCount -= 1
  }

  private func resetInterval(_ index: Int) {
    entries[index].intervalStartNanos = now
    entries[index].sides.0.stats = DirectionStats()
    entries[index].sides.1.stats = DirectionStats()
    entries[index].srt = LatencyStats()
    entries[index].art = LatencyStats()
    entries[index].cit = LatencyStats()
    entries[index].reportIndex += 1
  }

  private func emit(_ index: Int, closeType: CloseType, status: FlowStatus) {
    let entry = entries[index]
    let clientIsA = entry.clientSide == 0
    let key = entry.key
    var log = FlowLog(
      startMicros: entry.reportIndex == 0 ? entry.startNanos / 1000 : entry.intervalStartNanos / 1000,
      endMicros: entry.lastNanos / 1000,
      l4Protocol: L4Protocol(rawValue: key.ipProtocol) ?? .udp,
      clientIP: clientIsA ? key.addressA : key.addressB, clientPort: clientIsA ? key.portA : key.portB,
      serverIP: clientIsA ? key.addressB : key.addressA, serverPort: clientIsA ? key.portB : key.portA)
    log.orientationGuessed = entry.orientationGuessed
    let point =
      Int(key.capturePoint) < capturePoints.count ? capturePoints[Int(key.capturePoint)] : CapturePoint(interface: "")
    log.interface = point.interface
    log.netns = point.netns
    log.vlan = key.vlan
    log.tunnelID = entry.tunnelID
    log.clientToServer = entry.side(entry.clientSide).stats
    log.serverToClient = entry.side(1 - entry.clientSide).stats
    log.closeType = closeType
    log.status = status
    if entry.reportIndex == 0 {
      log.rttClientMicros = entry.rttClient
      log.rttServerMicros = entry.rttServer
      log.rttMicros = entry.rtt
      log.synCount = entry.synCount
      log.synAckCount = entry.synAckCount
      log.synRetransmissions = entry.synRetransmissions
      log.synAckRetransmissions = entry.synAckRetransmissions
    }
    log.srt = entry.srt
    log.art = entry.art
    log.cit = entry.cit
    log.icmpUnreachable = entry.icmpUnreachable
    log.reportIndex = entry.reportIndex
    log.flowID = entry.flowID
    log.flowSlot = index
    output.append(log)
    counters.recordsEmitted += 1
  }
}
