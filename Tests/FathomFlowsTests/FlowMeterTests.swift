import FathomFlows
import FathomRecords
import FathomTestSupport
import FathomWire
import Testing

/// Feeds hand-built conversations through decoder and flow table.
struct Conversation {
  var decoder = PacketDecoder()
  var meter: FlowMeter
  var packet = DecodedPacket()
  var records: [FlowLog] = []
  let client = FrameBuilder(source: "10.1.0.5", destination: "10.96.0.20")
  var server: FrameBuilder { client.reversed() }

  init(config: FlowConfig = FlowConfig()) { meter = FlowMeter(config: config) }

  mutating func send(_ frame: [UInt8], at millis: Double) {
    let result = frame.withUnsafeBytes {
      decoder.decode($0, linkType: 1, wireLength: frame.count, timestampNanos: Int64(millis * 1_000_000), into: &packet)
    }
    if result == .transport { meter.process(packet, capturePoint: 0) }
    records += meter.drain()
  }

  mutating func finish(idleSeconds: Double = 0) -> [FlowLog] {
    meter.finishAll(idleSeconds: idleSeconds)
    records += meter.drain()
    return records
  }

  /// SYN, SYN/ACK, ACK at 0, 1 and 3 ms; client ISN 1000, server ISN 5000.
  mutating func handshake(port: UInt16 = 41_000) {
    send(client.tcp(sourcePort: port, destinationPort: 80, seq: 1000, flags: FrameBuilder.syn), at: 0)
    send(
      server.tcp(
        sourcePort: 80, destinationPort: port, seq: 5000, ack: 1001, flags: FrameBuilder.syn | FrameBuilder.ack), at: 1)
    send(client.tcp(sourcePort: port, destinationPort: 80, seq: 1001, ack: 5001, flags: FrameBuilder.ack), at: 3)
  }
}

@Suite struct FlowMeterTests {
  let ack = FrameBuilder.ack
  let psh = FrameBuilder.psh

  @Test func completeConnectionFigures() throws {
    var c = Conversation()
    c.handshake()
    c.send(
      c.client.tcp(
        sourcePort: 41_000, destinationPort: 80, seq: 1001, ack: 5001, flags: ack | psh,
        payload: Array(repeating: 1, count: 100)), at: 10)
    c.send(c.server.tcp(sourcePort: 80, destinationPort: 41_000, seq: 5001, ack: 1101, flags: ack), at: 10.5)
    c.send(
      c.server.tcp(
        sourcePort: 80, destinationPort: 41_000, seq: 5001, ack: 1101, flags: ack | psh,
        payload: Array(repeating: 2, count: 300)), at: 30)
    c.send(
      c.client.tcp(sourcePort: 41_000, destinationPort: 80, seq: 1101, ack: 5301, flags: ack | FrameBuilder.fin), at: 40
    )
    c.send(
      c.server.tcp(sourcePort: 80, destinationPort: 41_000, seq: 5301, ack: 1102, flags: ack | FrameBuilder.fin), at: 41
    )
    c.send(c.client.tcp(sourcePort: 41_000, destinationPort: 80, seq: 1102, ack: 5302, flags: ack), at: 42)
    let flow = try #require(c.finish(idleSeconds: 10).first)
    #expect(flow.closeType == .finish && flow.status == .ok && !flow.orientationGuessed)
    #expect(flow.clientIP == IPAddress("10.1.0.5") && flow.serverPort == 80)
    #expect(flow.rttServerMicros == 1000 && flow.rttClientMicros == 2000 && flow.rttMicros == 3000)
    #expect(flow.srt.count == 1 && flow.srt.sumMicros == 500)
    #expect(flow.art.count == 1 && flow.art.sumMicros == 20_000)
    #expect(flow.clientToServer.packets == 5 && flow.serverToClient.packets == 4)
    #expect(flow.clientToServer.payloadBytes == 100 && flow.serverToClient.payloadBytes == 300)
    #expect(flow.clientToServer.l3Bytes == 5 * 40 + 100)
    #expect(flow.synCount == 1 && flow.synAckCount == 1 && flow.clientToServer.fins == 1)
  }

  @Test func rejectedSynIsARefusedConnection() throws {
    var c = Conversation()
    let syn = c.client.tcp(sourcePort: 41_001, destinationPort: 80, seq: 1000, flags: FrameBuilder.syn)
    c.send(syn, at: 0)
    c.send(c.server.icmp(type: 3, code: 3, body: [0, 0, 0, 0] + Array(syn[14..<54])), at: 0.2)
    let flows = c.finish(idleSeconds: 10)
    let tcp = try #require(flows.first { $0.l4Protocol == .tcp })
    #expect(tcp.closeType == .serverReset && tcp.status == .serverError)
    #expect(tcp.icmpUnreachable?.type == 3 && tcp.icmpUnreachable?.code == 3)
    #expect(flows.contains { $0.l4Protocol == .icmp }, "the ICMP error is accounted as a flow too")
  }

  @Test func resetAnswerToSynIsRefused() throws {
    var c = Conversation()
    c.send(c.client.tcp(sourcePort: 41_002, destinationPort: 81, seq: 1000, flags: FrameBuilder.syn), at: 0)
    c.send(
      c.server.tcp(sourcePort: 81, destinationPort: 41_002, seq: 0, ack: 1001, flags: FrameBuilder.rst | ack), at: 0.1)
    #expect(c.finish().first?.closeType == .serverReset)
  }

  @Test func unansweredSynsTimeOutAsSynRepeat() throws {
    var c = Conversation()
    for attempt in 0..<3 {
      c.send(
        c.client.tcp(sourcePort: 41_003, destinationPort: 80, seq: 1000, flags: FrameBuilder.syn),
        at: Double(attempt) * 1000)
    }
    c.send(c.client.udp(sourcePort: 9, destinationPort: 9, payload: [1]), at: 20_000)  // advances the clock
    let flow = try #require(c.records.first { $0.l4Protocol == .tcp })
    #expect(flow.closeType == .clientSynRepeat && flow.status == .serverError)
    #expect(flow.synCount == 3 && flow.synRetransmissions == 2)
  }

  @Test func retransmissionsOutOfOrderAndKeepalives() throws {
    var c = Conversation()
    c.handshake()
    let data = { (seq: UInt32, length: Int) in
      c.client.tcp(
        sourcePort: 41_000, destinationPort: 80, seq: seq, ack: 5001, flags: FrameBuilder.ack,
        payload: Array(repeating: 0, count: length))
    }
    c.send(data(1001, 100), at: 10)
    c.send(data(1201, 100), at: 11)  // 1101..1201 missing
    c.send(data(1101, 100), at: 12)  // fills the gap: out of order
    c.send(data(1001, 100), at: 13)  // seen before: retransmission
    c.send(data(1300, 1), at: 14)  // keepalive probe: not a retransmission
    c.send(c.client.tcp(sourcePort: 41_000, destinationPort: 80, seq: 1301, ack: 5001, flags: ack), at: 15)  // pure ACK
    let flow = try #require(c.finish().first)
    #expect(flow.clientToServer.outOfOrder == 1)
    #expect(flow.clientToServer.retransmissions == 1)
    #expect(flow.clientToServer.uniquePayloadBytes == 300)
    #expect(flow.clientToServer.payloadBytes == 401)
  }

  @Test func zeroWindowIsCounted() throws {
    var c = Conversation()
    c.handshake()
    c.send(c.server.tcp(sourcePort: 80, destinationPort: 41_000, seq: 5001, ack: 1001, flags: ack, window: 0), at: 5)
    #expect(c.finish().first?.serverToClient.zeroWindows == 1)
  }

  @Test func fullTableEvictsAndCounts() throws {
    var config = FlowConfig()
    config.capacity = 16
    var c = Conversation(config: config)
    for port in 0..<40 {
      c.send(c.client.udp(sourcePort: UInt16(20_000 + port), destinationPort: 53, payload: [1]), at: Double(port))
    }
    let flows = c.finish()
    #expect(c.meter.counters.evicted > 0)
    #expect(c.meter.activeFlows == 0)
    #expect(flows.count == 40, "every flow is reported exactly once")
    #expect(flows.filter { $0.closeType == .evicted }.count == Int(c.meter.counters.evicted))
  }

  @Test func longFlowsReportEveryInterval() throws {
    var c = Conversation()
    c.handshake()
    for second in 1...150 {
      c.send(
        c.client.tcp(
          sourcePort: 41_000, destinationPort: 80, seq: 1001 + UInt32(second - 1) * 10, ack: 5001, flags: ack | psh,
          payload: Array(repeating: 0, count: 10)), at: Double(second) * 1000)
    }
    let flows = c.finish()
    #expect(flows.map(\.closeType) == [.forcedReport, .forcedReport, .inProgress])
    #expect(flows.map(\.reportIndex) == [0, 1, 2])
    #expect(flows.reduce(0) { $0 + $1.clientToServer.payloadBytes } == 1500, "intervals add up to the whole")
    #expect(flows[0].rttMicros == 3000 && flows[1].rttMicros == 0, "handshake figures in the first record only")
  }

  @Test func idleEstablishedConnectionTimesOut() throws {
    var c = Conversation()
    c.handshake()
    c.send(c.client.udp(sourcePort: 9, destinationPort: 9, payload: [1]), at: 301_000)
    let flow = try #require(c.records.first { $0.l4Protocol == .tcp })
    #expect(flow.closeType == .timeout && flow.status == .serverError)
  }

  @Test func orientationWithoutHandshakeIsGuessedFromPorts() throws {
    var c = Conversation()
    // The DNS answer arrives first: the side on port 53 is still the server.
    c.send(c.server.udp(sourcePort: 53, destinationPort: 33_000, payload: [1, 2]), at: 0)
    c.send(c.client.udp(sourcePort: 33_000, destinationPort: 53, payload: [1]), at: 1)
    let flow = try #require(c.finish().first)
    #expect(flow.serverPort == 53 && flow.orientationGuessed && flow.serverToClient.payloadBytes == 2)
  }

  @Test func echoRequestAndReplyShareAFlow() throws {
    var c = Conversation()
    c.send(c.client.icmp(type: 8, code: 0, body: [0, 1, 0, 1]), at: 0)
    c.send(c.server.icmp(type: 0, code: 0, body: [0, 1, 0, 1]), at: 1)
    let flows = c.finish()
    #expect(flows.count == 1)
    #expect(flows.first?.clientIP == IPAddress("10.1.0.5") && flows.first?.serverToClient.packets == 1)
  }

  @Test func serverResetDuringTransferIsAServerError() throws {
    var c = Conversation()
    c.handshake()
    c.send(
      c.client.tcp(sourcePort: 41_000, destinationPort: 80, seq: 1001, ack: 5001, flags: ack | psh, payload: [1]), at: 5
    )
    c.send(
      c.server.tcp(sourcePort: 80, destinationPort: 41_000, seq: 5001, ack: 1002, flags: FrameBuilder.rst | ack), at: 6)
    let flow = try #require(c.finish().first)
    #expect(flow.closeType == .serverRst && flow.status == .serverError)
  }
}
