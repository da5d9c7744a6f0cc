import FathomPipeline
import FathomRecords
import Testing

/// DeepFlow's flow-state and TCP-performance cases (agent/resources/test/flow_generator).
///
/// DeepFlow's unit tests flush each flow at its timeout; the same is asked of Fathom with
/// `idleSecondsAtEnd` (the capture is taken to go on idle for 400 s). Where Fathom's definition
/// differs from DeepFlow's, the expected value is Fathom's and the difference is stated.
@Suite struct DeepFlowTCPTests {
  static let directory = "deepflow/agent/resources/test/flow_generator"

  static func flows(_ name: String) throws -> [FlowLog] {
    var options = TestData.wholeFlowOptions
    options.idleSecondsAtEnd = 400
    return try FlowPipeline.flows(file: TestData.path("\(directory)/\(name)"), options: options).0
      .filter { $0.l4Protocol == .tcp }
  }

  /// flow_state.rs: each capture's close type.
  @Test(arguments: [
    ("client-no-response.pcap", CloseType.serverEstablishReset),
    ("l4-source-port-reuse.pcap", .clientSourcePortReuse),
    ("syn-1.pcap", .clientSourcePortReuse),
    ("server-no-response.pcap", .clientEstablishReset),
    ("server-queue-lack.pcap", .serverQueueLack),
    ("server-reset.pcap", .serverReset),
    ("tcp-n-syn-ack.pcap", .serverSynAckRepeat),
    ("tcp-one-syn.pcap", .clientSynRepeat),
    // DeepFlow expects TcpFinClientRst (a client reset) for SYN/ACKs answered by the client's RST;
    // Fathom names it by REFERENCE.md's table: an RST during the handshake is an establish reset.
    ("client-syn-try-lack.pcap", .clientEstablishReset),
  ])
  func closeType(file: String, expected: CloseType) throws {
    try #require(TestData.available)
    let flows = try Self.flows(file)
    #expect(flows.last?.closeType == expected, "\(file): \(flows.map(\.closeType))")
  }

  @Test func closeTypesCarryTheirErrorClass() throws {
    try #require(TestData.available)
    #expect(try Self.flows("server-reset.pcap").last?.status == .serverError)
    #expect(try Self.flows("server-no-response.pcap").last?.status == .clientError)
    #expect(try Self.flows("tcp-one-syn.pcap").last?.status == .serverError)
    #expect(try Self.flows("l4-source-port-reuse.pcap").last?.status == .clientError)
  }

  /// perf/tcp.rs::art (art.result, last dump): rtt_0 20.322 ms, rtt_1 10.226 ms, rtt_full
  /// 30.548 ms, srt_1 10.04 ms, art_1 30.358 ms, cit 15.033 ms.
  @Test func responseTimes() throws {
    try #require(TestData.available)
    let flow = try #require(try Self.flows("art-continues-payload-len-larger-than-1.pcap").first)
    #expect(flow.rttClientMicros == 20_322)
    #expect(flow.rttServerMicros == 10_226)
    #expect(flow.rttMicros == 30_548)
    #expect(flow.srt.count == 1 && flow.srt.sumMicros == 10_040)
    #expect(flow.art.count == 1 && flow.art.sumMicros == 30_358)
    #expect(flow.cit.count == 1 && flow.cit.sumMicros == 15_033)
    #expect(flow.closeType == .finish)
  }

  /// client_request_timewait_and_syn_synack_count.result: rtt_0 193 µs, rtt_1 477 µs, rtt_full
  /// 670 µs, cit 28.837 ms, syn 1, synack 1.
  @Test func handshakeCounts() throws {
    try #require(TestData.available)
    let flow = try #require(try Self.flows("client_request_timewait_and_syn_synack_count.pcap").first)
    #expect(flow.rttClientMicros == 193)
    #expect(flow.rttServerMicros == 477)
    #expect(flow.rttMicros == 670)
    #expect(flow.cit.sumMicros == 28_837)
    #expect(flow.synCount == 1 && flow.synAckCount == 1)
  }

  /// handshake-error.result: retrans_0 2, syn 1, synack 2, retrans_synack 1, fin 4.
  /// DeepFlow also counts the repeated SYN/ACK in retrans_1; Fathom counts SYN and SYN/ACK
  /// repeats only in syn_retrans/synack_retrans (REFERENCE.md), so retrans_s2c is 0.
  @Test func handshakeErrors() throws {
    try #require(TestData.available)
    let flow = try #require(try Self.flows("handshake-error.pcap").first)
    #expect(flow.clientToServer.retransmissions == 2)
    #expect(flow.serverToClient.retransmissions == 0)
    #expect(flow.synCount == 1 && flow.synAckCount == 2 && flow.synAckRetransmissions == 1)
    #expect(flow.clientToServer.fins == 4)
  }

  /// xiangdao-retrans.result: DeepFlow counts 2 retransmissions (it compares with a short list of
  /// recent segments). Fathom counts every segment whose bytes it saw before: 612:1231, 606:612,
  /// 1235:1241 and the second copy of -921:-338 (4), and -338:-332, which fills a gap below the
  /// first segment seen, as out of order (1).
  @Test func retransmissions() throws {
    try #require(TestData.available)
    let flow = try #require(try Self.flows("xiangdao-retrans.pcap").first)
    #expect(flow.serverToClient.retransmissions == 4)
    #expect(flow.serverToClient.outOfOrder == 1)
  }

  /// flow_map.rs::tcp_syn_ack_zerowin: the SYN/ACK advertises a zero window.
  @Test func zeroWindowOnSynAck() throws {
    try #require(TestData.available)
    let flow = try #require(try Self.flows("tcp-syn-ack-zerowin.pcap").first)
    #expect(flow.serverToClient.zeroWindows == 1 && flow.clientToServer.zeroWindows == 0)
  }

  /// flow_map.rs (handshake-retrans.pcap): DeepFlow samples every SYN/SYN-ACK pairing (rtt_client
  /// 2 samples, sum 2822 µs; rtt_server 2 samples, sum 2829 µs; rtt 2510 µs). Fathom measures the
  /// first SYN to the first SYN/ACK (943 µs) and the first SYN/ACK to the client's first ACK
  /// (1255 µs), since a repeated segment makes its round trip ambiguous (Karn).
  @Test func handshakeRoundTripsIgnoreRepeats() throws {
    try #require(TestData.available)
    let flow = try #require(try Self.flows("handshake-retrans.pcap").first)
    #expect(flow.rttServerMicros == 943)
    #expect(flow.rttClientMicros == 1_255)
    #expect(flow.rttMicros == 2_198)
    #expect(flow.synRetransmissions == 1 && flow.synAckRetransmissions == 1)
  }
}
