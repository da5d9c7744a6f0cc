import FathomRecords
import FathomTestSupport
import FathomWire
import Testing

@Suite struct PacketDecoderTests {
  var decoder = PacketDecoder()
  var packet = DecodedPacket()

  mutating func decode(_ frame: [UInt8], linkType: UInt32 = 1, wireLength: Int? = nil, at micros: Int64 = 1)
    -> DecodeResult
  {
    frame.withUnsafeBytes { bytes in
      decoder.decode(
        bytes, linkType: linkType, wireLength: wireLength ?? frame.count, timestampNanos: micros * 1000, into: &packet)
    }
  }

  @Test mutating func tcpWithOptions() {
    let options: [UInt8] = [2, 4, 0x05, 0xB4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0]
    let frame = FrameBuilder().tcp(
      sourcePort: 40_000, destinationPort: 80, seq: 100, flags: FrameBuilder.syn, options: options)
    #expect(decode(frame) == .transport)
    #expect(packet.source == IPAddress("10.0.0.1") && packet.destination == IPAddress("10.0.0.2"))
    #expect(packet.sourcePort == 40_000 && packet.destinationPort == 80 && packet.sequence == 100)
    #expect(packet.tcpFlags == .syn)
    #expect(packet.tcpOptions.mss == 1460 && packet.tcpOptions.windowScale == 7 && packet.tcpOptions.sackPermitted)
    #expect(packet.tcpOptions.hasTimestamp && packet.tcpOptions.timestampValue == 9)
    #expect(packet.l3Length == 60 && packet.payloadLength == 0)
  }

  /// NOP, NOP, timestamps (the layout after a Linux handshake) take a shortcut past the option
  /// loop; the same options in another layout, and a capture cut inside them, take the loop.
  @Test mutating func timestampOptionsInEveryLayout() {
    let timestamps: [UInt8] = [8, 10, 0, 0, 1, 2, 0, 0, 3, 4]
    for options in [[1, 1] + timestamps, timestamps + [1, 1], [1, 1] + timestamps + [1, 1, 1, 1]] {
      let frame = FrameBuilder().tcp(
        sourcePort: 40_000, destinationPort: 80, seq: 100, flags: FrameBuilder.ack, payload: [7], options: options)
      #expect(decode(frame) == .transport)
      #expect(packet.tcpOptions.hasTimestamp, "\(options)")
      #expect(packet.tcpOptions.timestampValue == 0x0102 && packet.tcpOptions.timestampEcho == 0x0304)
      #expect(packet.tcpOptions.mss == 0 && packet.tcpOptions.windowScale == nil && packet.payloadLength == 1)
    }
    let frame = FrameBuilder().tcp(
      sourcePort: 40_000, destinationPort: 80, seq: 100, flags: FrameBuilder.ack, options: [1, 1] + timestamps)
    // Captured with a snap length that cuts two bytes into the echo value: no timestamp, and no
    // read past the capture.
    #expect(decode(Array(frame.prefix(frame.count - 2)), wireLength: frame.count) == .transport)
    #expect(!packet.tcpOptions.hasTimestamp)
  }

  @Test mutating func vlanAndQinQ() {
    var builder = FrameBuilder(vlan: 42)
    #expect(decode(builder.udp(sourcePort: 5000, destinationPort: 53, payload: [1, 2, 3])) == .transport)
    #expect(packet.vlanID == 42 && packet.payloadLength == 3)
    builder.vlan = nil
    let inner = builder.udp(sourcePort: 5000, destinationPort: 53, payload: [1])
    // 802.1ad outer tag 100 around an 802.1Q tag 7.
    let qinq = Array(inner[0..<12]) + [0x88, 0xA8] + be16(100) + [0x81, 0x00] + be16(7) + Array(inner[12...])
    #expect(decode(qinq) == .transport)
    #expect(packet.vlanID == 100 && packet.destinationPort == 53)
  }

  @Test mutating func ipv6ExtensionHeaders() {
    let builder = FrameBuilder(source: "2001:db8::1", destination: "2001:db8::2")
    let tcp = be16(1234) + be16(443) + be32(1) + be32(0) + [0x50, 0x10] + be16(100) + [0, 0, 0, 0] + [0xAA, 0xBB]
    // Hop-by-hop (next: destination options), destination options (next: TCP), 8 bytes each.
    let extensions: [UInt8] = [60, 0, 1, 4, 0, 0, 0, 0] + [6, 0, 1, 4, 0, 0, 0, 0]
    var ip = builder.ip(protocol: 0, extensions + tcp)
    ip[6] = 0  // first next-header: hop-by-hop
    #expect(decode(builder.ethernet(ip)) == .transport)
    #expect(
      packet.ipVersion == 6 && packet.ipProtocol == 6 && packet.destinationPort == 443 && packet.payloadLength == 2)
    #expect(packet.source.description == "2001:db8::1")
  }

  @Test mutating func udpFragmentsAreReassembled() {
    let builder = FrameBuilder()
    let payload = (0..<40).map { UInt8($0) }
    let segment = builder.udpSegment(sourcePort: 53, destinationPort: 3333, payload: payload)
    let first = builder.ethernet(
      builder.ip(protocol: 17, Array(segment[0..<24]), identification: 9, fragmentField: 0x2000))
    let second = builder.ethernet(builder.ip(protocol: 17, Array(segment[24...]), identification: 9, fragmentField: 3))
    #expect(decode(second) == .fragmentHeld)  // out of order on purpose
    #expect(decode(first) == .transport)
    #expect(packet.frameCount == 2 && packet.sourcePort == 53 && packet.payloadLength == 40)
    #expect(Array(packet.payload) == payload)
    #expect(packet.l3Length == 44 + 44)
    #expect(decoder.counters.datagramsReassembled == 1)
  }

  @Test mutating func gsoSuperFrameUsesFrameLength() {
    var frame = FrameBuilder().tcp(
      sourcePort: 1, destinationPort: 2, seq: 1, flags: FrameBuilder.ack, payload: [UInt8](repeating: 7, count: 100))
    frame[16] = 0  // IPv4 total length 0
    frame[17] = 0
    #expect(decode(frame, wireLength: 70_054) == .transport)
    #expect(packet.l3Length == 70_040 && packet.payloadLength == 70_000)
    #expect(packet.payload.count == 100)
    #expect(decoder.counters.lengthFromFrame == 1)
  }

  @Test mutating func icmpUnreachableQuotesTheSyn() {
    let syn = FrameBuilder().tcp(sourcePort: 40_000, destinationPort: 8080, seq: 77, flags: FrameBuilder.syn)
    let quoted = Array(syn[14..<(14 + 28)])
    #expect(decode(FrameBuilder().reversed().icmp(type: 3, code: 3, body: [0, 0, 0, 0] + quoted)) == .transport)
    #expect(packet.icmpIsError && packet.quoted.ipProtocol == 6)
    #expect(
      packet.quoted.sourcePort == 40_000 && packet.quoted.destinationPort == 8080 && packet.quoted.tcpSequence == 77)
  }

  @Test mutating func vxlanIsDecapsulated() {
    let inner = FrameBuilder(source: "172.16.0.1", destination: "172.16.0.2").tcp(
      sourcePort: 5555, destinationPort: 6379, seq: 1, flags: FrameBuilder.syn)
    let vxlan: [UInt8] = [0x08, 0, 0, 0] + be32(4242 << 8)
    #expect(decode(FrameBuilder().udp(sourcePort: 40_000, destinationPort: 4789, payload: vxlan + inner)) == .transport)
    #expect(packet.tunnelID == 4242 && packet.destinationPort == 6379 && packet.source == IPAddress("172.16.0.1"))
  }

  @Test mutating func cookedAndLoopbackLinkTypes() {
    let ip = FrameBuilder().ip(protocol: 17, FrameBuilder().udpSegment(sourcePort: 1, destinationPort: 2, payload: [9]))
    let sll2 = be16(0x0800) + [0, 0] + be32(3) + be16(1) + [0, 6] + [UInt8](repeating: 0, count: 8) + ip
    #expect(decode(sll2, linkType: LinkType.linuxSLL2) == .transport)
    let null = le32(2) + ip
    #expect(decode(null, linkType: LinkType.null) == .transport && packet.destinationPort == 2)
  }

  @Test mutating func malformedFramesAreCountedByReason() {
    let good = FrameBuilder().tcp(sourcePort: 1, destinationPort: 2, seq: 1, flags: FrameBuilder.ack)
    #expect(decode([]) == .malformed(.emptyFrame))
    #expect(decode(Array(good[0..<20])) == .malformed(.truncatedIPHeader))
    var badVersion = good
    badVersion[14] = 0x35
    #expect(decode(badVersion) == .malformed(.badIPVersion))
    var badOffset = good
    badOffset[14 + 20 + 12] = 0x20
    #expect(decode(badOffset) == .malformed(.badTCPDataOffset))
    var shortUDP = FrameBuilder().udp(sourcePort: 1, destinationPort: 2, payload: [1, 2])
    shortUDP[14 + 20 + 5] = 3
    #expect(decode(shortUDP) == .malformed(.badUDPLength))
    let tags: [UInt8] = (0..<12).flatMap { _ -> [UInt8] in [0x81, 0, 0, 1] }
    #expect(decode(Array(good[0..<12]) + tags + Array(good[12...])) == .malformed(.tooManyEncapsulations))
    #expect(decoder.counters.malformedTotal == 6)
    #expect(decode([1, 2, 3], linkType: 9999) == .unsupportedLinkType)
  }

  /// Random bytes under every link type: decoding ends with a result, never a crash.
  @Test mutating func randomFramesNeverCrash() {
    var generator = SystemRandomNumberGenerator()
    var seed: UInt64 = 0x1234_5678
    for round in 0..<5_000 {
      seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      let length = Int(seed >> 54)
      var frame = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
      if length > 14 && round % 2 == 0 {
        frame[12] = 0x08
        frame[13] = 0
        frame[14] = 0x45
      }
      let linkTypes: [UInt32] = [0, 1, 9, 101, 105, 108, 113, 127, 228, 229, 239, 276]
      _ = decode(frame, linkType: linkTypes[round % linkTypes.count])
    }
    #expect(decoder.counters.frames == 5_000)
  }
}
