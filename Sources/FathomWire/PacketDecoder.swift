import FathomRecords

/// Decodes link, network and transport headers of captured frames into `DecodedPacket`s.
///
/// Zero-copy: every field is read in place from the frame; only IP fragments are copied (into the
/// reassembly buffer). Every frame that does not yield a transport packet is counted by reason.
public struct PacketDecoder {
  public private(set) var counters = WireCounters()
  /// Decapsulate VXLAN (UDP 4789, 8472), Geneve (6081), GTP-U (2152), GRE, ERSPAN and IP-in-IP to
  /// the inner flow.
  public var decapsulateTunnels = true
  /// Nested encapsulations followed before a frame is declared malformed.
  public static let maxEncapsulationDepth = 4
  private let reassembler = FragmentReassembler()

  public init() {}

  /// Decodes one frame. `wireLength` is the frame's length on the wire, which tells a snap-length
  /// cut from a lying length field.
  public mutating func decode(
    _ frame: UnsafeRawBufferPointer, linkType: UInt32, wireLength: Int, timestampNanos: Int64,
    into packet: inout DecodedPacket
  ) -> DecodeResult {
    counters.frames += 1
    packet.timestampNanos = timestampNanos
    packet.vlanID = 0
    packet.tunnelID = nil
    packet.frameCount = 1
    packet.frameBytes = wireLength
    packet.icmpIsError = false
    packet.tcpFlags = []
    packet.sourcePort = 0
    packet.destinationPort = 0
    packet.payloadLength = 0
    packet.payload = UnsafeRawBufferPointer(start: nil, count: 0)
    let result: DecodeResult
    if let base = frame.baseAddress, frame.count > 0 {
      var cursor = Cursor(base: base, end: frame.count, cut: max(0, wireLength - frame.count), now: timestampNanos)
      result = decodeLink(linkType, at: 0, &cursor, &packet)
    } else {
      result = .malformed(.emptyFrame)
    }
    switch result {
    case .transport: counters.transportPackets += 1
    case .notIP: counters.notIP += 1
    case .otherTransport: counters.otherTransport += 1
    case .fragmentHeld: break
    case .unsupportedLinkType: counters.unsupportedLinkType += 1
    case .malformed(let reason): counters.malformed[reason.rawValue] += 1
    }
    return result
  }

  /// Counts fragments of datagrams that never completed; call at the end of the input.
  public mutating func finish() {
    reassembler.finish()
    counters.fragmentsDropped = reassembler.droppedFragments
  }

  /// Where decoding stands inside one frame.
  struct Cursor {
    let base: UnsafeRawPointer
    /// Captured bytes end here; reads stay below it.
    var end: Int
    /// Bytes of the frame missing after `end` (cut by the snap length).
    var cut: Int
    let now: Int64
    var depth = 0
  }

  // MARK: link layers

  private mutating func decodeLink(
    _ linkType: UInt32, at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket
  ) -> DecodeResult {
    let base = cursor.base
    let length = cursor.end - offset
    switch linkType {
    case LinkType.ethernet:
      return decodeEthernet(at: offset, &cursor, &packet)
    case LinkType.raw, LinkType.rawOpenBSD, LinkType.rawAlternate:
      return decodeIPByVersion(at: offset, &cursor, &packet)
    case LinkType.ipv4:
      return decodeIPv4(at: offset, &cursor, &packet)
    case LinkType.ipv6:
      return decodeIPv6(at: offset, &cursor, &packet)
    case LinkType.null, LinkType.loop:
      guard length >= 4 else { return .malformed(.truncatedLinkHeader) }
      // NULL stores the family in the capturing host's byte order, LOOP in network order.
      var family =
        linkType == LinkType.loop ? be32(base, offset) : base.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
      if family > 0xFFFF { family = family.byteSwapped }
      switch family {
      case 2: return decodeIPv4(at: offset + 4, &cursor, &packet)
      case 10, 24, 28, 30: return decodeIPv6(at: offset + 4, &cursor, &packet)
      default: return .notIP
      }
    case LinkType.linuxSLL:
      guard length >= 16 else { return .malformed(.truncatedLinkHeader) }
      if be16(base, offset + 2) == 824 { return .notIP }  // ARPHRD_NETLINK
      return decodeEtherType(be16(base, offset + 14), at: offset + 16, &cursor, &packet)
    case LinkType.linuxSLL2:
      guard length >= 20 else { return .malformed(.truncatedLinkHeader) }
      if be16(base, offset + 8) == 824 { return .notIP }
      return decodeEtherType(be16(base, offset), at: offset + 20, &cursor, &packet)
    case LinkType.nflog:
      return decodeNFLOG(at: offset, &cursor, &packet)
    case LinkType.radiotap:
      guard length >= 4 else { return .malformed(.truncatedLinkHeader) }
      let headerLength = Int(le16(base, offset + 2))
      guard headerLength >= 8, headerLength <= length else { return .malformed(.truncatedLinkHeader) }
      return decode80211(at: offset + headerLength, &cursor, &packet)
    case LinkType.ieee80211:
      return decode80211(at: offset, &cursor, &packet)
    case LinkType.ppp, LinkType.pppHDLC:
      return decodePPP(at: offset, &cursor, &packet)
    case LinkType.ciscoHDLC:
      guard length >= 4 else { return .malformed(.truncatedLinkHeader) }
      return decodeEtherType(be16(base, offset + 2), at: offset + 4, &cursor, &packet)
    default:
      return .unsupportedLinkType
    }
  }

  private mutating func decodeEthernet(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket)
    -> DecodeResult
  {
    guard cursor.end - offset >= 14 else { return .malformed(.truncatedLinkHeader) }
    return decodeEtherType(be16(cursor.base, offset + 12), at: offset + 14, &cursor, &packet)
  }

  /// Follows VLAN tags, MPLS labels, PPPoE and LLC/SNAP to the IP header named by `etherType`.
  private mutating func decodeEtherType(
    _ etherType: UInt16, at start: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket
  ) -> DecodeResult {
    let base = cursor.base
    var type = etherType
    var offset = start
    var tags = 0
    while true {
      switch type {
      case 0x0800:
        return decodeIPv4(at: offset, &cursor, &packet)
      case 0x86DD:
        return decodeIPv6(at: offset, &cursor, &packet)
      case 0x8100, 0x88A8, 0x9100, 0x9200:
        tags += 1
        guard tags <= 8 else { return .malformed(.tooManyEncapsulations) }
        guard cursor.end - offset >= 4 else { return .malformed(.truncatedLinkHeader) }
        if packet.vlanID == 0 && cursor.depth == 0 { packet.vlanID = be16(base, offset) & 0x0FFF }
        type = be16(base, offset + 2)
        offset += 4
      case 0x8847, 0x8848:  // MPLS: pop labels to the bottom of the stack, then guess by version
        var labels = 0
        while true {
          guard cursor.end - offset >= 4 else { return .malformed(.truncatedLinkHeader) }
          labels += 1
          guard labels <= 16 else { return .malformed(.tooManyEncapsulations) }
          let bottom = byte(base, offset + 2) & 0x01 != 0
          offset += 4
          if bottom { break }
        }
        guard cursor.end - offset >= 1 else { return .malformed(.truncatedLinkHeader) }
        switch byte(base, offset) >> 4 {
        case 4: return decodeIPv4(at: offset, &cursor, &packet)
        case 6: return decodeIPv6(at: offset, &cursor, &packet)
        default: return .notIP
        }
      case 0x8864:  // PPPoE session: 6-byte header, then the PPP protocol
        guard cursor.end - offset >= 8 else { return .malformed(.truncatedLinkHeader) }
        return decodePPPProtocol(be16(base, offset + 6), at: offset + 8, &cursor, &packet)
      case 0x894F:  // Network Service Header
        return decodeNSH(at: offset, &cursor, &packet)
      case 0x6558:  // transparent Ethernet bridging
        return decodeTunnelled(at: offset, ethernet: true, tunnelID: nil, &cursor, &packet)
      case ..<0x0600:  // 802.3 length field: only LLC/SNAP can carry IP
        guard cursor.end - offset >= 8, byte(base, offset) == 0xAA, byte(base, offset + 1) == 0xAA,
          byte(base, offset + 2) == 0x03
        else { return .notIP }
        type = be16(base, offset + 6)
        offset += 8
        tags += 1
        guard tags <= 8 else { return .malformed(.tooManyEncapsulations) }
      default:
        return .notIP
      }
    }
  }

  private mutating func decodePPP(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket) -> DecodeResult
  {
    let base = cursor.base
    var at = offset
    if cursor.end - at >= 2, byte(base, at) == 0xFF, byte(base, at + 1) == 0x03 { at += 2 }
    guard cursor.end - at >= 1 else { return .malformed(.truncatedLinkHeader) }
    // The protocol field is compressed to one byte when its low bit is set.
    if byte(base, at) & 0x01 != 0 { return decodePPPProtocol(UInt16(byte(base, at)), at: at + 1, &cursor, &packet) }
    guard cursor.end - at >= 2 else { return .malformed(.truncatedLinkHeader) }
    return decodePPPProtocol(be16(base, at), at: at + 2, &cursor, &packet)
  }

  private mutating func decodePPPProtocol(
    _ proto: UInt16, at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket
  ) -> DecodeResult {
    switch proto {
    case 0x0021: return decodeIPv4(at: offset, &cursor, &packet)
    case 0x0057: return decodeIPv6(at: offset, &cursor, &packet)
    default: return .notIP
    }
  }

  private mutating func decodeNFLOG(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket)
    -> DecodeResult
  {
    let base = cursor.base
    guard cursor.end - offset >= 4 else { return .malformed(.truncatedLinkHeader) }
    let family = byte(base, offset)
    var at = offset + 4
    // Type-length-value attributes, lengths in host (little-endian) order, padded to 4 bytes.
    while cursor.end - at >= 4 {
      let length = Int(le16(base, at))
      let type = le16(base, at + 2)
      guard length >= 4, length <= cursor.end - at else { return .malformed(.truncatedLinkHeader) }
      if type == 9 {  // NFULA_PAYLOAD
        cursor.end = at + length
        cursor.cut = 0
        switch family {
        case 2: return decodeIPv4(at: at + 4, &cursor, &packet)
        case 10: return decodeIPv6(at: at + 4, &cursor, &packet)
        default: return decodeIPByVersion(at: at + 4, &cursor, &packet)
        }
      }
      at += (length + 3) & ~3
    }
    return .notIP
  }

  private mutating func decode80211(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket)
    -> DecodeResult
  {
    let base = cursor.base
    guard cursor.end - offset >= 24 else { return .malformed(.truncatedLinkHeader) }
    let control = byte(base, offset)
    let flags = byte(base, offset + 1)
    guard (control >> 2) & 0x3 == 2 else { return .notIP }  // only data frames carry IP
    guard flags & 0x40 == 0 else { return .notIP }  // protected: encrypted payload
    let subtype = control >> 4
    if subtype & 0x4 != 0 { return .notIP }  // null data, no payload
    var header = 24
    if flags & 0x03 == 0x03 { header += 6 }
    if subtype & 0x8 != 0 {
      header += 2
      if flags & 0x80 != 0 { header += 4 }
    }
    let llc = offset + header
    guard cursor.end - llc >= 8, byte(base, llc) == 0xAA, byte(base, llc + 1) == 0xAA else { return .notIP }
    return decodeEtherType(be16(base, llc + 6), at: llc + 8, &cursor, &packet)
  }

  private mutating func decodeIPByVersion(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket)
    -> DecodeResult
  {
    guard cursor.end - offset >= 1 else { return .malformed(.truncatedIPHeader) }
    switch byte(cursor.base, offset) >> 4 {
    case 4: return decodeIPv4(at: offset, &cursor, &packet)
    case 6: return decodeIPv6(at: offset, &cursor, &packet)
    default: return .malformed(.badIPVersion)
    }
  }

  /// Decodes an encapsulated frame (Ethernet or IP) as the packet, remembering the tunnel id.
  private mutating func decodeTunnelled(
    at offset: Int, ethernet: Bool, tunnelID: UInt32?, _ cursor: inout Cursor, _ packet: inout DecodedPacket
  ) -> DecodeResult {
    guard cursor.depth < Self.maxEncapsulationDepth else { return .malformed(.tooManyEncapsulations) }
    cursor.depth += 1
    counters.decapsulated += 1
    if let tunnelID { packet.tunnelID = tunnelID }
    return ethernet ? decodeEthernet(at: offset, &cursor, &packet) : decodeIPByVersion(at: offset, &cursor, &packet)
  }

  // MARK: network layer

  /// Bytes from `offset` to the end of the frame as it was on the wire.
  @inline(__always) private func wireBytes(from offset: Int, _ cursor: Cursor) -> Int {
    cursor.end - offset + cursor.cut
  }

  private mutating func decodeIPv4(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket)
    -> DecodeResult
  {
    let base = cursor.base
    guard cursor.end - offset >= 20 else { return .malformed(.truncatedIPHeader) }
    let versionAndLength = byte(base, offset)
    guard versionAndLength >> 4 == 4 else { return .malformed(.badIPVersion) }
    let headerLength = Int(versionAndLength & 0x0F) * 4
    guard headerLength >= 20 else { return .malformed(.badIPHeaderLength) }
    guard cursor.end - offset >= headerLength else { return .malformed(.truncatedIPHeader) }
    let totalLength = Int(be16(base, offset + 2))
    let onWire = wireBytes(from: offset, cursor)
    var l3Length = totalLength
    if totalLength == 0 {
      // BIG TCP / GSO super-frames beyond 64 KiB carry 0: the frame says how long they are.
      l3Length = onWire
      counters.lengthFromFrame += 1
    } else if totalLength > onWire {
      // Cut by a snap length the record does not admit: the header, as tcpdump and DeepFlow
      // read it, tells what was sent; only the captured part is visible.
      counters.lengthBeyondFrame += 1
    } else if totalLength < headerLength {
      return .malformed(.ipLengthShorterThanHeader)
    }
    packet.ipVersion = 4
    packet.source = IPAddress(ipv4: be32(base, offset + 12))
    packet.destination = IPAddress(ipv4: be32(base, offset + 16))
    let proto = byte(base, offset + 9)
    packet.ipProtocol = proto
    packet.l3Length = l3Length
    let capturedEnd = min(offset + l3Length, cursor.end)
    let fragmentField = be16(base, offset + 6)
    let moreFragments = fragmentField & 0x2000 != 0
    let fragmentOffset = Int(fragmentField & 0x1FFF) * 8
    if moreFragments || fragmentOffset != 0 {
      let key = FragmentReassembler.Key(
        source: packet.source, destination: packet.destination, identification: UInt32(be16(base, offset + 4)),
        ipProtocol: proto)
      let data = UnsafeRawBufferPointer(
        start: base + offset + headerLength, count: max(0, capturedEnd - offset - headerLength))
      return reassemble(
        key, fragmentOffset: fragmentOffset, more: moreFragments, data: data, l3Length: l3Length, &cursor, &packet)
    }
    cursor.end = capturedEnd
    return decodeTransport(proto, at: offset + headerLength, length: l3Length - headerLength, &cursor, &packet)
  }

  private mutating func decodeIPv6(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket)
    -> DecodeResult
  {
    let base = cursor.base
    guard cursor.end - offset >= 40 else { return .malformed(.truncatedIPHeader) }
    guard byte(base, offset) >> 4 == 6 else { return .malformed(.badIPVersion) }
    let payloadLength = Int(be16(base, offset + 4))
    let onWire = wireBytes(from: offset, cursor)
    var l3Length = 40 + payloadLength
    if payloadLength == 0 {
      // Jumbograms and BIG TCP super-frames carry 0: the frame says how long they are.
      l3Length = onWire
      counters.lengthFromFrame += 1
    } else if l3Length > onWire {
      counters.lengthBeyondFrame += 1
    }
    packet.ipVersion = 6
    packet.source = IPAddress(high: be64(base, offset + 8), low: be64(base, offset + 16))
    packet.destination = IPAddress(high: be64(base, offset + 24), low: be64(base, offset + 32))
    packet.l3Length = l3Length
    let capturedEnd = min(offset + l3Length, cursor.end)
    var next = byte(base, offset + 6)
    var at = offset + 40
    var extensions = 0
    while true {
      switch next {
      case 0, 43, 60, 135, 139, 140:  // hop-by-hop, routing, destination options, mobility, HIP, shim6
        guard capturedEnd - at >= 8 else { return .malformed(.badIPv6ExtensionHeader) }
        let length = (Int(byte(base, at + 1)) + 1) * 8
        guard capturedEnd - at >= length else { return .malformed(.badIPv6ExtensionHeader) }
        next = byte(base, at)
        at += length
      case 51:  // authentication header
        guard capturedEnd - at >= 8 else { return .malformed(.badIPv6ExtensionHeader) }
        let length = (Int(byte(base, at + 1)) + 2) * 4
        guard capturedEnd - at >= length else { return .malformed(.badIPv6ExtensionHeader) }
        next = byte(base, at)
        at += length
      case 44:  // fragment
        guard capturedEnd - at >= 8 else { return .malformed(.badIPv6ExtensionHeader) }
        let field = be16(base, at + 2)
        let key = FragmentReassembler.Key(
          source: packet.source, destination: packet.destination, identification: be32(base, at + 4),
          ipProtocol: byte(base, at))
        packet.ipProtocol = byte(base, at)
        let data = UnsafeRawBufferPointer(start: base + at + 8, count: max(0, capturedEnd - at - 8))
        return reassemble(
          key, fragmentOffset: Int(field & 0xFFF8), more: field & 0x1 != 0, data: data, l3Length: l3Length, &cursor,
          &packet)
      default:
        packet.ipProtocol = next
        cursor.end = capturedEnd
        return decodeTransport(next, at: at, length: l3Length - (at - offset), &cursor, &packet)
      }
      extensions += 1
      guard extensions <= 8 else { return .malformed(.badIPv6ExtensionHeader) }
    }
  }

  private mutating func reassemble(
    _ key: FragmentReassembler.Key, fragmentOffset: Int, more: Bool, data: UnsafeRawBufferPointer, l3Length: Int,
    _ cursor: inout Cursor, _ packet: inout DecodedPacket
  ) -> DecodeResult {
    counters.fragments += 1
    let frameBytes = packet.frameBytes
    switch reassembler.add(
      key, offset: fragmentOffset, more: more, data: data, l3Bytes: l3Length, frameBytes: frameBytes, now: cursor.now)
    {
    case .held:
      counters.fragmentsDropped = reassembler.droppedFragments
      return .fragmentHeld
    case .invalid:
      return .malformed(.badFragment)
    case .complete(let length, let l3Bytes, let frames, let allFrameBytes):
      counters.datagramsReassembled += 1
      packet.l3Length = l3Bytes
      packet.frameBytes = allFrameBytes
      packet.frameCount = frames
      var inner = Cursor(
        base: UnsafeRawPointer(reassembler.output.baseAddress!), end: length, cut: 0, now: cursor.now,
        depth: cursor.depth)
      return decodeTransport(key.ipProtocol, at: 0, length: length, &inner, &packet)
    }
  }

  // MARK: transport layer

  private mutating func decodeTransport(
    _ proto: UInt8, at offset: Int, length: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket
  ) -> DecodeResult {
    let base = cursor.base
    let captured = cursor.end - offset
    switch proto {
    case 6:
      guard captured >= 20, length >= 20 else { return .malformed(.truncatedTransportHeader) }
      let headerLength = Int(byte(base, offset + 12) >> 4) * 4
      guard headerLength >= 20, headerLength <= length else { return .malformed(.badTCPDataOffset) }
      packet.sourcePort = be16(base, offset)
      packet.destinationPort = be16(base, offset + 2)
      packet.sequence = be32(base, offset + 4)
      packet.acknowledgement = be32(base, offset + 8)
      packet.tcpFlags = TCPFlags(rawValue: byte(base, offset + 13) & 0x3F)
      packet.window = be16(base, offset + 14)
      packet.tcpOptions = TCPOptions()
      if headerLength == 32 && captured >= 32 && be32(base, offset + 20) == 0x0101_080A {
        // NOP, NOP, timestamps: the options of nearly every segment after the handshake between
        // Linux hosts (its own fast path, tcp_parse_aligned_timestamp) read without the loop.
        packet.tcpOptions.hasTimestamp = true
        packet.tcpOptions.timestampValue = be32(base, offset + 24)
        packet.tcpOptions.timestampEcho = be32(base, offset + 28)
      } else if headerLength > 20 {
        parseTCPOptions(base, from: offset + 20, to: min(offset + headerLength, cursor.end), &packet.tcpOptions)
      }
      setPayload(from: offset + headerLength, length: length - headerLength, cursor, &packet)
      return .transport
    case 17:
      guard captured >= 8, length >= 8 else { return .malformed(.truncatedTransportHeader) }
      packet.sourcePort = be16(base, offset)
      packet.destinationPort = be16(base, offset + 2)
      var udpLength = Int(be16(base, offset + 4))
      if udpLength == 0 && length > 65_535 {
        udpLength = length  // jumbogram or UDP GSO
      } else if udpLength < 8 {
        return .malformed(.badUDPLength)
      } else if udpLength > length {
        udpLength = length
        counters.lengthBeyondFrame += 1
      }
      if decapsulateTunnels, let tunnel = tunnelKind(packet.destinationPort), captured >= 16 {
        let outer = packet
        let outerCursor = cursor
        let result = decodeUDPTunnel(tunnel, at: offset + 8, &cursor, &packet)
        switch result {
        case .notIP, .otherTransport:
          // The tunnel carries no flow Fathom tracks (ARP, ...): account it as the UDP flow it is.
          packet = outer
          cursor = outerCursor
        default:
          return result
        }
      }
      setPayload(from: offset + 8, length: udpLength - 8, cursor, &packet)
      return .transport
    case 1, 58:
      guard captured >= 8, length >= 8 else { return .malformed(.truncatedTransportHeader) }
      let type = byte(base, offset)
      let code = byte(base, offset + 1)
      packet.icmpType = type
      packet.icmpCode = code
      let isV6 = proto == 58
      packet.icmpIsError =
        isV6 ? (type >= 1 && type <= 4) : (type == 3 || type == 4 || type == 5 || type == 11 || type == 12)
      // Flow "ports" as Zeek uses them: the request type and its answer's type (or the code).
      let (flowType, counterpart) = ICMPPairing.ports(type: type, code: code, v6: isV6)
      packet.sourcePort = flowType
      packet.destinationPort = counterpart
      if packet.icmpIsError { parseQuoted(at: offset + 8, cursor, &packet) }
      setPayload(from: offset + 8, length: length - 8, cursor, &packet)
      return .transport
    case 4:
      return decodeTunnelled(at: offset, ethernet: false, tunnelID: nil, &cursor, &packet)
    case 41:
      return decodeTunnelled(at: offset, ethernet: false, tunnelID: nil, &cursor, &packet)
    case 47:
      return decodeGRE(at: offset, &cursor, &packet)
    default:
      return .otherTransport
    }
  }

  @inline(__always)
  private func setPayload(from offset: Int, length: Int, _ cursor: Cursor, _ packet: inout DecodedPacket) {
    packet.payloadLength = max(0, length)
    let available = max(0, min(length, cursor.end - offset))
    packet.payload = UnsafeRawBufferPointer(start: cursor.base + offset, count: available)
  }

  private func parseTCPOptions(_ base: UnsafeRawPointer, from start: Int, to end: Int, _ options: inout TCPOptions) {
    var at = start
    while at < end {
      let kind = byte(base, at)
      if kind == 0 { return }
      if kind == 1 {
        at += 1
        continue
      }
      guard at + 1 < end else { return }
      let length = Int(byte(base, at + 1))
      guard length >= 2, at + length <= end else { return }
      switch (kind, length) {
      case (2, 4): options.mss = be16(base, at + 2)
      case (3, 3): options.windowScale = min(byte(base, at + 2), 14)
      case (4, 2): options.sackPermitted = true
      case (5, _): options.sackBlocks = UInt8((length - 2) / 8)
      case (8, 10):
        options.hasTimestamp = true
        options.timestampValue = be32(base, at + 2)
        options.timestampEcho = be32(base, at + 6)
      default: break
      }
      at += length
    }
  }

  /// Reads the IP header and first 8 transport bytes quoted by an ICMP error.
  private func parseQuoted(at offset: Int, _ cursor: Cursor, _ packet: inout DecodedPacket) {
    let base = cursor.base
    var quoted = QuotedTuple()
    guard cursor.end - offset >= 1 else { return }
    var transport = 0
    switch byte(base, offset) >> 4 {
    case 4:
      guard cursor.end - offset >= 20 else { return }
      let headerLength = Int(byte(base, offset) & 0x0F) * 4
      guard headerLength >= 20 else { return }
      quoted.ipProtocol = byte(base, offset + 9)
      quoted.source = IPAddress(ipv4: be32(base, offset + 12))
      quoted.destination = IPAddress(ipv4: be32(base, offset + 16))
      transport = offset + headerLength
    case 6:
      guard cursor.end - offset >= 40 else { return }
      quoted.ipProtocol = byte(base, offset + 6)
      quoted.source = IPAddress(high: be64(base, offset + 8), low: be64(base, offset + 16))
      quoted.destination = IPAddress(high: be64(base, offset + 24), low: be64(base, offset + 32))
      transport = offset + 40
    default:
      return
    }
    guard cursor.end - transport >= 8 else { return }
    if quoted.ipProtocol == 6 || quoted.ipProtocol == 17 {
      quoted.sourcePort = be16(base, transport)
      quoted.destinationPort = be16(base, transport + 2)
      if quoted.ipProtocol == 6 { quoted.tcpSequence = be32(base, transport + 4) }
    }
    packet.quoted = quoted
  }

  // MARK: tunnels

  private enum UDPTunnel { case vxlan, vxlanGPE, geneve, gtpUser }

  @inline(__always) private func tunnelKind(_ port: UInt16) -> UDPTunnel? {
    switch port {
    case 4789, 8472: .vxlan
    case 4790: .vxlanGPE
    case 6081: .geneve
    case 2152: .gtpUser
    default: nil
    }
  }

  private mutating func decodeUDPTunnel(
    _ kind: UDPTunnel, at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket
  ) -> DecodeResult {
    let base = cursor.base
    switch kind {
    case .vxlan:
      guard byte(base, offset) & 0x08 != 0 else { return .notIP }  // I flag: VNI valid
      return decodeTunnelled(at: offset + 8, ethernet: true, tunnelID: be32(base, offset + 4) >> 8, &cursor, &packet)
    case .vxlanGPE:
      let flags = byte(base, offset)
      guard flags & 0x08 != 0 else { return .notIP }  // I flag: VNI valid
      // Without the P flag there is no next-protocol field and the payload is Ethernet.
      let next = flags & 0x04 != 0 ? byte(base, offset + 3) : 3
      return decodeNextProtocol(next, at: offset + 8, tunnelID: be32(base, offset + 4) >> 8, &cursor, &packet)
    case .geneve:
      guard byte(base, offset) >> 6 == 0 else { return .notIP }
      let optionsLength = Int(byte(base, offset) & 0x3F) * 4
      let inner = offset + 8 + optionsLength
      guard inner <= cursor.end else { return .malformed(.truncatedTunnelHeader) }
      let vni = be32(base, offset + 4) >> 8
      switch be16(base, offset + 2) {
      case 0x6558: return decodeTunnelled(at: inner, ethernet: true, tunnelID: vni, &cursor, &packet)
      case 0x0800, 0x86DD: return decodeTunnelled(at: inner, ethernet: false, tunnelID: vni, &cursor, &packet)
      default: return .notIP
      }
    case .gtpUser:
      // GTPv1-U: version 1, protocol type GTP, message type 255 (G-PDU) carries user IP packets.
      let flags = byte(base, offset)
      guard flags >> 5 == 1, flags & 0x10 != 0, byte(base, offset + 1) == 255 else { return .notIP }
      var inner = offset + 8
      if flags & 0x07 != 0 {
        // Sequence number, N-PDU number and next-extension type, then extension headers.
        guard cursor.end - inner >= 4 else { return .malformed(.truncatedTunnelHeader) }
        var nextExtension = byte(base, inner + 3)
        inner += 4
        var extensions = 0
        while nextExtension != 0 {
          guard cursor.end - inner >= 1, extensions < 8 else { return .malformed(.truncatedTunnelHeader) }
          let length = Int(byte(base, inner)) * 4
          guard length > 0, cursor.end - inner >= length else { return .malformed(.truncatedTunnelHeader) }
          nextExtension = byte(base, inner + length - 1)
          inner += length
          extensions += 1
        }
      }
      guard inner < cursor.end else { return .notIP }
      return decodeTunnelled(at: inner, ethernet: false, tunnelID: nil, &cursor, &packet)
    }
  }

  /// Next-protocol values shared by VXLAN-GPE and NSH: 1 IPv4, 2 IPv6, 3 Ethernet, 4 NSH.
  private mutating func decodeNextProtocol(
    _ next: UInt8, at offset: Int, tunnelID: UInt32?, _ cursor: inout Cursor, _ packet: inout DecodedPacket
  ) -> DecodeResult {
    switch next {
    case 1, 2: return decodeTunnelled(at: offset, ethernet: false, tunnelID: tunnelID, &cursor, &packet)
    case 3: return decodeTunnelled(at: offset, ethernet: true, tunnelID: tunnelID, &cursor, &packet)
    case 4: return decodeNSH(at: offset, &cursor, &packet)
    default: return .notIP
    }
  }

  /// Network Service Header (RFC 8300): length in 4-byte words, then the next protocol.
  private mutating func decodeNSH(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket) -> DecodeResult
  {
    let base = cursor.base
    guard cursor.end - offset >= 8 else { return .malformed(.truncatedTunnelHeader) }
    let length = Int(be16(base, offset) & 0x3F) * 4
    guard length >= 8, cursor.end - offset >= length else { return .malformed(.truncatedTunnelHeader) }
    guard cursor.depth < Self.maxEncapsulationDepth else { return .malformed(.tooManyEncapsulations) }
    cursor.depth += 1
    return decodeNextProtocol(byte(base, offset + 3), at: offset + length, tunnelID: nil, &cursor, &packet)
  }

  private mutating func decodeGRE(at offset: Int, _ cursor: inout Cursor, _ packet: inout DecodedPacket) -> DecodeResult
  {
    let base = cursor.base
    guard cursor.end - offset >= 4 else { return .malformed(.truncatedTunnelHeader) }
    let flags = be16(base, offset)
    let proto = be16(base, offset + 2)
    let version = flags & 0x7
    var at = offset + 4
    if flags & 0x8000 != 0 { at += 4 }  // checksum + reserved
    if flags & 0x2000 != 0 { at += 4 }  // key
    if flags & 0x1000 != 0 { at += 4 }  // sequence number
    if version == 1 && flags & 0x0080 != 0 { at += 4 }  // PPTP acknowledgement
    guard at <= cursor.end else { return .malformed(.truncatedTunnelHeader) }
    switch proto {
    case 0x0800, 0x86DD:
      return decodeTunnelled(at: at, ethernet: false, tunnelID: nil, &cursor, &packet)
    case 0x6558:
      return decodeTunnelled(at: at, ethernet: true, tunnelID: nil, &cursor, &packet)
    case 0x880B:  // PPP (PPTP)
      guard cursor.depth < Self.maxEncapsulationDepth else { return .malformed(.tooManyEncapsulations) }
      cursor.depth += 1
      counters.decapsulated += 1
      return decodePPP(at: at, &cursor, &packet)
    case 0x88BE:  // ERSPAN type II: 8-byte header (type I has none, and no sequence flag)
      let inner = flags & 0x1000 != 0 ? at + 8 : at
      guard inner <= cursor.end else { return .malformed(.truncatedTunnelHeader) }
      return decodeTunnelled(at: inner, ethernet: true, tunnelID: nil, &cursor, &packet)
    case 0x22EB:  // ERSPAN type III: 12 bytes, plus 8 of platform-specific subheader when O is set
      guard cursor.end - at >= 12 else { return .malformed(.truncatedTunnelHeader) }
      let inner = at + 12 + (byte(base, at + 11) & 0x01 != 0 ? 8 : 0)
      guard inner <= cursor.end else { return .malformed(.truncatedTunnelHeader) }
      return decodeTunnelled(at: inner, ethernet: true, tunnelID: nil, &cursor, &packet)
    default:
      return .otherTransport
    }
  }
}

/// How ICMP messages map to flow "ports": a request and its reply share one flow.
public enum ICMPPairing {
  /// The reply type of a request type (and the request of a reply), or nil for other messages.
  @inlinable public static func counterpart(of type: UInt8, v6: Bool) -> (request: UInt8, reply: UInt8)? {
    if v6 {
      switch type {
      case 128, 129: return (128, 129)  // echo
      case 130, 131: return (130, 131)  // multicast listener query / report
      case 133, 134: return (133, 134)  // router solicitation / advertisement
      case 135, 136: return (135, 136)  // neighbour solicitation / advertisement
      default: return nil
      }
    }
    switch type {
    case 8, 0: return (8, 0)  // echo
    case 13, 14: return (13, 14)  // timestamp
    case 15, 16: return (15, 16)  // information
    case 17, 18: return (17, 18)  // address mask
    case 10, 9: return (10, 9)  // router solicitation / advertisement
    default: return nil
    }
  }

  /// True for the answering half of a request/reply pair (echo reply, ...).
  @inlinable public static func isReply(type: UInt8, v6: Bool) -> Bool {
    v6
      ? (type == 129 || type == 131 || type == 134 || type == 136)
      : (type == 0 || type == 14 || type == 16 || type == 18 || type == 9)
  }

  @inline(__always) static func ports(type: UInt8, code: UInt8, v6: Bool) -> (UInt16, UInt16) {
    guard let pair = counterpart(of: type, v6: v6) else { return (UInt16(type), UInt16(code)) }
    return type == pair.request
      ? (UInt16(pair.request), UInt16(pair.reply)) : (UInt16(pair.reply), UInt16(pair.request))
  }
}
