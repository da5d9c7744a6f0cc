import FathomRecords
import FathomWire

/// TCP state machine and performance figures (REFERENCE.md, "TCP performance").
enum TCPTracking {
  static let srtCapMicros: Int64 = 10_000_000
  static let rttCapMicros: Int64 = 30_000_000
  static let artCapMicros: Int64 = 30_000_000

  @inline(__always) static func micros(_ from: Int64, _ to: Int64) -> Int64 { (to - from) / 1000 }

  static func update(_ entry: inout FlowEntry, _ packet: DecodedPacket, sender: Int) {
    let flags = packet.tcpFlags
    let time = packet.timestampNanos
    let payload = packet.payloadLength
    let syn = flags.contains(.syn)
    let ack = flags.contains(.ack)
    let rst = flags.contains(.rst)
    let fin = flags.contains(.fin)

    entry.withSide(sender) { side in
      if flags.contains(.psh) { side.stats.pshs &+= 1 }
      if ack && !syn { side.stats.acks &+= 1 }
      if fin { side.stats.fins &+= 1 }
      if rst { side.stats.rsts &+= 1 }
      // An RST's window says nothing about the receiver's buffer; a SYN/ACK's does.
      if packet.window == 0 && !rst { side.stats.zeroWindows &+= 1 }
    }

    if syn {
      handleSyn(&entry, packet, sender: sender, isSynAck: ack, time: time)
    } else if ack && entry.state == .synReceived && sender == entry.clientSide {
      let server = entry.side(1 - entry.clientSide)
      if !server.synSeen || packet.acknowledgement == server.initialSequence &+ 1 {
        entry.state = .established
        // Client idle time starts at the handshake: the wait before the first request counts.
        entry.lastDataSide = 1 - entry.clientSide
        entry.withSide(1 - entry.clientSide) { $0.lastDataNanos = time }
        if let synAck = entry.synAckNanos { entry.rttClient = capped(micros(synAck, time), rttCapMicros) }
        if let syn = entry.synNanos { entry.rtt = capped(micros(syn, time), rttCapMicros) }
      }
    } else if entry.state == .none {
      entry.state = .established  // picked up mid-stream
    } else if entry.state == .synSent, sender != entry.clientSide, ack, !rst,
      packet.acknowledgement != entry.side(entry.clientSide).initialSequence &+ 1
    {
      // The server answers the SYN with a segment of another connection (a challenge ACK): it
      // still holds an old connection on these ports.
      entry.reusedPorts = true
    } else if entry.state == .synSent || entry.state == .synReceived, !rst, !entry.reusedPorts, payload > 0 || fin {
      entry.state = .established  // handshake ACK lost from the capture, but the connection works
    }

    if payload > 0 && !syn {
      var verdict = SequenceTracker.Verdict.inOrder
      entry.withSide(sender) { side in
        verdict = side.sequence.observe(sequence: packet.sequence, length: payload)
        side.stats.uniquePayloadBytes &+= UInt64(side.sequence.newBytes)
        switch verdict {
        case .retransmission: side.stats.retransmissions &+= 1
        case .outOfOrder: side.stats.outOfOrder &+= 1
        case .inOrder, .keepalive: break
        }
      }
      if verdict == .inOrder || verdict == .outOfOrder {
        if sender == entry.clientSide {
          entry.withSide(sender) { side in
            side.unackedEnd = packet.sequence &+ UInt32(truncatingIfNeeded: payload)
            side.unackedNanos = time
            side.awaitingAck = true
          }
        }
        updateResponseTimes(&entry, sender: sender, time: time)
      }
    } else if payload == 0 && ack && !syn && !fin && !rst && sender != entry.clientSide {
      // SRT: the server's pure ACK of exactly the client's last data segment.
      let client = entry.side(entry.clientSide)
      if client.awaitingAck && packet.acknowledgement == client.unackedEnd {
        let sample = micros(client.unackedNanos, time)
        if sample >= 0 && sample <= srtCapMicros { entry.srt.add(UInt32(sample)) }
        entry.withSide(entry.clientSide) { $0.awaitingAck = false }
      }
    }
    if ack {
      entry.withSide(1 - sender) { peer in
        if peer.finSeen && !peer.finAcknowledged && packet.acknowledgement == peer.finAckSequence {
          peer.finAcknowledged = true
        }
      }
    }
    if fin {
      entry.withSide(sender) { side in
        if !side.finSeen { side.finAckSequence = packet.sequence &+ UInt32(truncatingIfNeeded: payload) &+ 1 }
        side.finSeen = true
      }
      if entry.firstFinBy < 0 { entry.firstFinBy = sender }
      if entry.state != .reset {
        entry.state = entry.sides.0.finSeen && entry.sides.1.finSeen ? .closed : .closing
      }
    }
    if rst && entry.state != .reset {
      entry.stateAtReset = entry.state
      entry.resetBy = sender
      entry.state = .reset
    }
  }

  private static func handleSyn(
    _ entry: inout FlowEntry, _ packet: DecodedPacket, sender: Int, isSynAck: Bool, time: Int64
  ) {
    let alreadySeen = entry.side(sender).synSeen
    entry.withSide(sender) { side in
      if !side.synSeen {
        side.synSeen = true
        side.initialSequence = packet.sequence
        if !side.sequence.initialized {
          // Data starts after the SYN's sequence number, so a lost first segment shows as a gap.
          side.sequence.initialized = true
          side.sequence.nextSequence = packet.sequence &+ 1
          side.sequence.lowestSequence = packet.sequence &+ 1
        }
      }
    }
    if isSynAck {
      entry.synAckCount &+= 1
      if alreadySeen { entry.synAckRetransmissions &+= 1 }
      if entry.state >= .established && entry.rttClient > 0 { entry.synAcksAfterHandshake &+= 1 }
      // The SYN/ACK's receiver is the client, whatever the ports suggested.
      if entry.orientationGuessed || entry.synNanos == nil {
        entry.clientSide = 1 - sender
        entry.orientationGuessed = false
      }
      if entry.synAckNanos == nil {
        entry.synAckNanos = time
        if let syn = entry.synNanos { entry.rttServer = capped(micros(syn, time), rttCapMicros) }
      }
      if entry.state < .synReceived { entry.state = .synReceived }
    } else {
      entry.synCount &+= 1
      if alreadySeen { entry.synRetransmissions &+= 1 }
      if alreadySeen && entry.synAckNanos != nil { entry.synsAfterSynAck &+= 1 }
      entry.clientSide = sender
      entry.orientationGuessed = false
      if entry.synNanos == nil { entry.synNanos = time }
      if entry.state < .synSent { entry.state = .synSent }
    }
  }

  /// ART (client data → next server data) and CIT (server data → next client data).
  static func updateResponseTimes(_ entry: inout FlowEntry, sender: Int, time: Int64) {
    let client = entry.clientSide
    if entry.lastDataSide >= 0 && entry.lastDataSide != sender {
      let previous = entry.side(entry.lastDataSide).lastDataNanos
      let sample = micros(previous, time)
      if sender != client {
        if sample >= 0 && sample <= artCapMicros { entry.art.add(UInt32(sample)) }
      } else if sample >= 0 {
        entry.cit.add(UInt32(clamping: sample))
      }
    }
    entry.lastDataSide = sender
    entry.withSide(sender) { $0.lastDataNanos = time }
  }

  @inline(__always) static func capped(_ micros: Int64, _ cap: Int64) -> UInt32 {
    micros < 0 || micros > cap ? 0 : UInt32(micros)
  }
}

/// Decides which side is the client before a handshake says so.
enum Orientation {
  /// Ports servers commonly listen on above 1023.
  static let servicePorts: Set<UInt16> = [
    1433, 1521, 2181, 2379, 2380, 3000, 3306, 4222, 5000, 5432, 5672, 6379, 6443, 8000, 8080, 8081, 8443, 8888, 9000,
    9042, 9080, 9090, 9092, 9200, 9300, 10250, 11211, 15672, 27017,
  ]

  static func isServicePort(_ port: UInt16) -> Bool { port < 1024 || servicePorts.contains(port) }

  /// Returns the client side (0 = A, 1 = B) and whether it was guessed.
  static func initialClient(_ packet: DecodedPacket, sender: Int) -> (Int, Bool) {
    let receiver = 1 - sender
    if packet.ipProtocol == 6 && packet.tcpFlags.contains(.syn) {
      return packet.tcpFlags.contains(.ack) ? (receiver, false) : (sender, false)
    }
    if packet.ipProtocol == 1 || packet.ipProtocol == 58 {
      // Requests (echo, timestamp, ...) come from the client; for unpaired messages (errors,
      // reports) the sender is only a guess.
      let v6 = packet.ipProtocol == 58
      guard ICMPPairing.counterpart(of: packet.icmpType, v6: v6) != nil else { return (sender, true) }
      return (ICMPPairing.isReply(type: packet.icmpType, v6: v6) ? receiver : sender, false)
    }
    let sourceIsService = isServicePort(packet.sourcePort)
    let destinationIsService = isServicePort(packet.destinationPort)
    if sourceIsService && !destinationIsService { return (receiver, true) }
    if destinationIsService && !sourceIsService { return (sender, true) }
    if packet.ipProtocol == 17 || sourceIsService { return (sender, true) }  // UDP: first sender asks
    // TCP mid-stream with two ephemeral ports: the lower port is more likely the listener.
    return (packet.sourcePort < packet.destinationPort ? receiver : sender, true)
  }
}
