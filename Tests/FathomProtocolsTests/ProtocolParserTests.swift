import FathomFlows
import FathomRecords
import FathomTestSupport
import FathomWire
import Testing

@testable import FathomProtocols

/// Drives decoder, flow table and protocol stage with hand-built TCP/UDP conversations.
final class Exchange {
  var decoder = PacketDecoder()
  let flows = FlowMeter()
  let requests: RequestMeter
  var packet = DecodedPacket()
  var records: [RequestLog] = []
  var flowRecords: [FlowLog] = []
  let client: FrameBuilder
  var clientSeq: UInt32 = 1001
  var serverSeq: UInt32 = 5001
  var clock = 0.0
  let clientPort: UInt16 = 40_000
  let serverPort: UInt16

  init(serverPort: UInt16 = 80, config: RequestConfig = RequestConfig()) {
    client = FrameBuilder(source: "10.1.0.5", destination: "10.1.0.9")
    self.serverPort = serverPort
    requests = RequestMeter(config: config, capacity: 65_535)
  }

  func deliver(_ frame: [UInt8]) {
    clock += 1
    let result = frame.withUnsafeBytes {
      decoder.decode($0, linkType: 1, wireLength: frame.count, timestampNanos: Int64(clock * 1_000_000), into: &packet)
    }
    guard result == .transport else { return }
    let context = flows.process(packet, capturePoint: 0)
    collectFlows()
    requests.process(packet, context: context, capturePoint: 0)
    records += requests.drain()
  }

  private func collectFlows() {
    var ended = flows.drain()
    requests.annotate(&ended)
    records += requests.drain()
    flowRecords += ended
  }

  func handshake() {
    deliver(
      client.tcp(sourcePort: clientPort, destinationPort: serverPort, seq: clientSeq - 1, flags: FrameBuilder.syn))
    deliver(
      client.reversed().tcp(
        sourcePort: serverPort, destinationPort: clientPort, seq: serverSeq - 1, ack: clientSeq,
        flags: FrameBuilder.syn | FrameBuilder.ack))
    deliver(
      client.tcp(
        sourcePort: clientPort, destinationPort: serverPort, seq: clientSeq, ack: serverSeq, flags: FrameBuilder.ack))
  }

  /// Sends bytes from the client (or server) as one segment; `skip` leaves a hole in the stream.
  func send(_ text: String, fromClient: Bool = true, skip: Int = 0) {
    send(Array(text.utf8), fromClient: fromClient, skip: skip)
  }

  func send(_ bytes: [UInt8], fromClient: Bool = true, skip: Int = 0) {
    if fromClient {
      clientSeq &+= UInt32(skip)
      deliver(
        client.tcp(
          sourcePort: clientPort, destinationPort: serverPort, seq: clientSeq, ack: serverSeq,
          flags: FrameBuilder.ack | FrameBuilder.psh, payload: bytes))
      clientSeq &+= UInt32(bytes.count)
    } else {
      serverSeq &+= UInt32(skip)
      deliver(
        client.reversed().tcp(
          sourcePort: serverPort, destinationPort: clientPort, seq: serverSeq, ack: clientSeq,
          flags: FrameBuilder.ack | FrameBuilder.psh, payload: bytes))
      serverSeq &+= UInt32(bytes.count)
    }
  }

  /// Ends the capture: flows finish (as in progress unless `closed`).
  func finish(closed: Bool = false) {
    if closed {
      deliver(
        client.tcp(
          sourcePort: clientPort, destinationPort: serverPort, seq: clientSeq, ack: serverSeq,
          flags: FrameBuilder.fin | FrameBuilder.ack))
      deliver(
        client.reversed().tcp(
          sourcePort: serverPort, destinationPort: clientPort, seq: serverSeq, ack: clientSeq + 1,
          flags: FrameBuilder.fin | FrameBuilder.ack))
    }
    flows.finishAll(idleSeconds: closed ? 10 : 0)
    collectFlows()
    requests.finishAll()
    records += requests.drain()
  }
}

@Suite struct HTTP1Tests {
  /// `fathom flows` keeps no request records; the flows' request counts must not change.
  @Test(arguments: [true, false])
  func countsDoNotDependOnKeepingRecords(keepsRecords: Bool) throws {
    var config = RequestConfig()
    config.keepsRecords = keepsRecords
    let x = Exchange(config: config)
    x.handshake()
    x.send("GET /a HTTP/1.1\r\nHost: shop\r\n\r\nGET /b HTTP/1.1\r\nHost: shop\r\n\r\nGET /c HTTP/1.1\r\n\r\n")
    x.send(
      "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\nHTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n",
      fromClient: false)
    x.finish(closed: true)
    #expect(x.records.count == (keepsRecords ? 3 : 0))
    let counts = try #require(x.flowRecords.last?.application)
    #expect(counts.requests == 3 && counts.responses == 2)
    #expect(counts.clientErrors == 1 && counts.serverErrors == 1 && counts.timeouts == 1)
    #expect(x.requests.counters.requestsEmitted == 3)
  }

  @Test func pipelinedRequestsPairInOrder() throws {
    let x = Exchange()
    x.handshake()
    x.send("GET /a HTTP/1.1\r\nHost: shop\r\nX-Request-ID: r-1\r\n\r\nGET /b HTTP/1.1\r\nHost: shop\r\n\r\n")
    x.send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-ID: r-1\r\n\r\nhello", fromClient: false)
    // Chunked answer split across segments, the chunk size line cut in the middle.
    x.send("HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n1", fromClient: false)
    x.send("0\r\n0123456789abcdef\r\n0\r\n\r\n", fromClient: false)
    x.finish(closed: true)
    let http = x.records.filter { $0.applicationProtocol == .http }
    #expect(http.map(\.resource) == ["/a", "/b"])
    #expect(http.map(\.code) == [200, 503])
    #expect(http.map(\.status) == [.ok, .serverError])
    #expect(http[0].requestID == "r-1" && http[0].responseRequestID == "r-1" && http[0].domain == "shop")
    #expect(http[0].requestTCPSequence == 1001)
    #expect(http[1].responseBytes > 16)
    #expect(x.flowRecords.last?.application.requests == 2 && x.flowRecords.last?.application.serverErrors == 1)
  }

  @Test func bodilessResponsesAndInterimContinue() throws {
    let x = Exchange()
    x.handshake()
    x.send("HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
    x.send("HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", fromClient: false)  // HEAD: no body follows
    x.send("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    x.send("HTTP/1.1 100 Continue\r\n\r\n", fromClient: false)
    x.send("data")
    x.send("HTTP/1.1 204 No Content\r\n\r\n", fromClient: false)
    x.send("GET /n HTTP/1.1\r\nHost: a\r\n\r\n")
    x.send("HTTP/1.1 304 Not Modified\r\n\r\n", fromClient: false)
    x.finish(closed: true)
    #expect(x.records.map(\.resource) == ["/h", "/p", "/n"])
    #expect(x.records.map(\.code) == [200, 204, 304])
  }

  @Test func outOfOrderSegmentsAreReordered() throws {
    let x = Exchange()
    x.handshake()
    x.send("GET /o HTTP/1.1\r\nHost: a\r\n\r\n")
    let response = Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".utf8)
    let first = Array(response[0..<10])
    let second = Array(response[10..<20])
    let third = Array(response[20...])
    let base = x.serverSeq
    x.serverSeq = base &+ 20
    x.send(third, fromClient: false)
    x.serverSeq = base
    x.send(first, fromClient: false)
    x.send(second, fromClient: false)
    x.finish(closed: true)
    #expect(x.records.first?.code == 404 && x.records.first?.status == .clientError)
  }

  @Test func aGapResynchronisesAtTheNextMessage() throws {
    let x = Exchange()
    x.handshake()
    x.send("GET /lost HTTP/1.1\r\nHost: a\r\n\r\n")
    x.send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", fromClient: false)
    // The rest of that body and the start of the next response are lost; the stream resumes later.
    x.send("GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    x.send("tail of something\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", fromClient: false, skip: 4000)
    x.finish(closed: true)
    #expect(x.records.contains { $0.code == 201 })
    #expect(x.requests.counters.streamGaps >= 1)
  }

  @Test func endlessHeadersAreBoundedAndCounted() throws {
    var config = RequestConfig()
    config.maxHeaderBytes = 1024
    let x = Exchange(config: config)
    x.handshake()
    x.send("GET /big HTTP/1.1\r\nHost: a\r\n")
    for _ in 0..<20 { x.send("X-Filler: " + String(repeating: "z", count: 200) + "\r\n") }
    x.send("\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    x.send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", fromClient: false)
    x.finish(closed: true)
    #expect(x.requests.counters.parseFailures >= 1)
    #expect(x.records.contains { $0.resource == "/after" && $0.code == 200 })
  }

  @Test func absurdChunkSizesAreParseFailures() throws {
    let x = Exchange()
    x.handshake()
    x.send("GET /c HTTP/1.1\r\nHost: a\r\n\r\n")
    x.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n", fromClient: false)
    x.finish(closed: true)
    #expect(x.requests.counters.parseFailures == 1)
  }

  @Test func unansweredRequestsTimeOutOrAreUnknown() throws {
    let closed = Exchange()
    closed.handshake()
    closed.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    closed.finish(closed: true)
    #expect(closed.records.map(\.status) == [.timeout])
    let cut = Exchange()
    cut.handshake()
    cut.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    cut.finish()
    #expect(cut.records.map(\.status) == [.unknown])
  }

  @Test func traceContextHeaders() throws {
    let x = Exchange()
    x.handshake()
    x.send(
      "GET /t HTTP/1.1\r\nHost: a\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    )
    x.send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", fromClient: false)
    x.finish(closed: true)
    let record = try #require(x.records.first)
    #expect(record.traceID == "4bf92f3577b34da6a3ce929d0e0e4736" && record.spanID == "00f067aa0ba902b7")
    #expect(record.forwardedFor == "1.2.3.4")
  }
}

@Suite struct DNSAndRedisTests {
  /// A query for `name` (type A), as DNS wire bytes.
  static func query(id: UInt16, name: String) -> [UInt8] {
    var bytes = be16(id) + [0x01, 0x00] + be16(1) + be16(0) + be16(0) + be16(0)
    for label in name.split(separator: ".") { bytes += [UInt8(label.utf8.count)] + Array(label.utf8) }
    return bytes + [0] + be16(1) + be16(1)
  }

  static func answer(to query: [UInt8], rcode: UInt8, address: [UInt8]?) -> [UInt8] {
    var bytes = query
    bytes[2] = 0x81
    bytes[3] = 0x80 | rcode
    if let address {
      bytes[7] = 1
      bytes += [0xC0, 12] + be16(1) + be16(1) + be32(30) + be16(4) + address
    }
    return bytes
  }

  @Test func udpQueriesPairByIdAndSearchPathNamesAreKept() throws {
    let x = Exchange(serverPort: 53)
    let names = ["web.shop.svc.cluster.local.shop.svc.cluster.local", "web.shop.svc.cluster.local"]
    for (index, name) in names.enumerated() {
      let q = Self.query(id: UInt16(100 + index), name: name)
      x.deliver(x.client.udp(sourcePort: 33_000, destinationPort: 53, payload: q))
      let a = Self.answer(to: q, rcode: index == 0 ? 3 : 0, address: index == 0 ? nil : [10, 96, 0, 20])
      x.deliver(x.client.reversed().udp(sourcePort: 53, destinationPort: 33_000, payload: a))
    }
    x.finish()
    #expect(x.records.map(\.domain) == names)
    #expect(x.records.map(\.status) == [.clientError, .ok])
    #expect(x.records.last?.answers == [DNSAnswer(type: "A", value: "10.96.0.20", ttl: 30)])
  }

  @Test func compressionLoopsAndTruncationAreParseFailures() throws {
    let x = Exchange(serverPort: 53)
    var loop = be16(7) + [0x81, 0x80] + be16(1) + be16(0) + be16(0) + be16(0)
    loop += [0xC0, 12]  // the question name points at itself
    x.deliver(x.client.udp(sourcePort: 33_001, destinationPort: 53, payload: Self.query(id: 7, name: "a.b")))
    x.deliver(x.client.reversed().udp(sourcePort: 53, destinationPort: 33_001, payload: loop + be16(1) + be16(1)))
    x.deliver(x.client.reversed().udp(sourcePort: 53, destinationPort: 33_001, payload: Array(loop.prefix(13))))
    x.finish()
    #expect(x.requests.counters.parseFailures == 2)
    #expect(x.records.map(\.status) == [.unknown])  // the query stays unanswered
  }

  /// RFC 6762 §6: multicast DNS responses carry no question. There is no query type to report
  /// (Zeek leaves qtype unset for them, mdns-no-assoc baseline); the answers are still read.
  @Test func aResponseWithoutAQuestionHasNoQueryType() throws {
    let x = Exchange(serverPort: 5353)
    var announcement = be16(0) + [0x84, 0x00] + be16(0) + be16(1) + be16(0) + be16(0)
    announcement += [7] + Array("printer".utf8) + [5] + Array("local".utf8) + [0]
    announcement += be16(1) + be16(1) + be32(120) + be16(4) + [192, 168, 0, 9]
    x.deliver(x.client.udp(sourcePort: 5353, destinationPort: 5353, payload: announcement))
    x.finish()
    #expect(x.records.map(\.method) == [""])
    #expect(x.records.map(\.domain) == [""])
    #expect(x.records.first?.answers == [DNSAnswer(type: "A", value: "192.168.0.9", ttl: 120)])
    #expect(x.requests.counters.parseFailures == 0)
  }

  /// RFC 6891: the OPT record's TTL carries the rcode's high 8 bits; it follows any authority
  /// records, which are walked without decoding.
  @Test func ednsExtendedRcodeIsReadFromTheOPTRecord() throws {
    let x = Exchange(serverPort: 53)
    let q = Self.query(id: 9, name: "edns.example")
    x.deliver(x.client.udp(sourcePort: 33_002, destinationPort: 53, payload: q))
    var a = Self.answer(to: q, rcode: 0, address: nil)
    a[9] = 1  // one authority record: example. NS ns.example. (name by pointer)
    a[11] = 1  // one additional record: OPT
    a += [0xC0, 17] + be16(2) + be16(1) + be32(60) + be16(5) + [2] + Array("ns".utf8) + [0xC0, 17]
    a += [0] + be16(41) + be16(1232) + [1, 0, 0, 0] + be16(0)  // extended rcode 1 → 16 (BADVERS)
    x.deliver(x.client.reversed().udp(sourcePort: 53, destinationPort: 33_002, payload: a))
    x.finish()
    #expect(x.records.map(\.code) == [16])
    #expect(x.records.map(\.status) == [.serverError])
    #expect(x.requests.counters.parseFailures == 0)
  }

  @Test func dnsOverTCPWithTwoMessagesInOneSegmentAndOneSplit() throws {
    let x = Exchange(serverPort: 53)
    x.handshake()
    let q1 = Self.query(id: 1, name: "a.svc.cluster.local")
    let q2 = Self.query(id: 2, name: "b.svc.cluster.local")
    x.send(be16(UInt16(q1.count)) + q1 + be16(UInt16(q2.count)) + q2)
    let a1 = Self.answer(to: q1, rcode: 0, address: [10, 0, 0, 1])
    let a2 = Self.answer(to: q2, rcode: 3, address: nil)
    let both = be16(UInt16(a1.count)) + a1 + be16(UInt16(a2.count)) + a2
    x.send(Array(both[0..<20]), fromClient: false)
    x.send(Array(both[20...]), fromClient: false)
    x.finish(closed: true)
    #expect(x.records.map(\.domain) == ["a.svc.cluster.local", "b.svc.cluster.local"])
    #expect(x.records.map(\.code) == [0, 3])
  }

  @Test func redisPipelineWithErrorsAndRESP3() throws {
    let x = Exchange(serverPort: 6379)
    x.handshake()
    x.send("*2\r\n$3\r\nGET\r\n$4\r\nuser\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$5\r\nHELLO\r\n")
    x.send("$5\r\nalice\r\n-ERR wrong type\r\n%1\r\n+server\r\n+redis\r\n", fromClient: false)
    x.finish(closed: true)
    #expect(x.records.map(\.method) == ["GET", "SET", "HELLO"])
    #expect(x.records.map(\.resource) == ["user", "k", ""])
    #expect(x.records.map(\.status) == [.ok, .serverError, .ok])
    #expect(x.records[1].errorMessage == "ERR wrong type")
  }

  /// Garbage on the well-known ports: bounded, counted, never a crash.
  @Test(arguments: [UInt16(80), 53, 6379])
  func garbageOnWellKnownPorts(port: UInt16) throws {
    let x = Exchange(serverPort: port)
    x.handshake()
    var seed: UInt64 = 42
    for _ in 0..<200 {
      let bytes = (0..<Int.random(in: 1...600)).map { _ -> UInt8 in
        seed = seed &* 6_364_136_223_846_793_005 &+ 1
        return UInt8(truncatingIfNeeded: seed >> 33)
      }
      x.send(bytes, fromClient: Bool.random())
    }
    x.finish(closed: true)
    #expect(x.flowRecords.count == 1)
  }
}

@Suite struct DNSRetryTests {
  /// A resolver retrying with the same id: the first attempt is reported as a timeout.
  @Test func retriedQueryCountsTheLostAttempt() throws {
    let x = Exchange(serverPort: 53)
    let q = DNSAndRedisTests.query(id: 9, name: "checkout.shop.svc.cluster.local")
    x.deliver(x.client.udp(sourcePort: 33_010, destinationPort: 53, payload: q))
    x.deliver(x.client.udp(sourcePort: 33_010, destinationPort: 53, payload: q))
    x.deliver(
      x.client.reversed().udp(
        sourcePort: 53, destinationPort: 33_010,
        payload: DNSAndRedisTests.answer(to: q, rcode: 0, address: [10, 96, 0, 30])))
    x.finish()
    #expect(x.records.map(\.status) == [.timeout, .ok])
  }
}

@Suite struct SOCKSTunnelTests {
  /// SOCKS5 with username/password, the request split across segments, and the client's HTTP
  /// request sent before the server's reply: the tunnelled HTTP is still read.
  @Test func socks5TunnelCarriesHTTP() throws {
    let x = Exchange(serverPort: 1080)
    x.handshake()
    x.send([5, 2, 0, 2])
    x.send([5, 2], fromClient: false)
    x.send([1, 4] + Array("user".utf8) + [4] + Array("pass".utf8))
    x.send([1, 0], fromClient: false)
    let request: [UInt8] = [5, 1, 0, 3, 11] + Array("example.com".utf8) + [0, 80]
    x.send(Array(request[0..<6]))
    x.send(Array(request[6...]) + Array("GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n".utf8))
    x.send(
      [5, 0, 0, 1, 10, 0, 0, 9, 0x1F, 0x90] + Array("HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n".utf8),
      fromClient: false)
    x.send("GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n")
    x.send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", fromClient: false)
    x.finish(closed: true)
    #expect(x.records.map(\.resource) == ["/a", "/b"])
    #expect(x.records.map(\.code) == [302, 200])
    #expect(x.records.allSatisfy { $0.domain == "example.com" && $0.applicationProtocol == .http })
  }

  @Test func socks4aTunnelCarriesRedis() throws {
    let x = Exchange(serverPort: 1080)
    x.handshake()
    x.send([4, 1, 0x18, 0xEB, 0, 0, 0, 1] + Array("bob".utf8) + [0] + Array("cache.local".utf8) + [0])
    x.send([0, 90, 0, 0, 0, 0, 0, 0], fromClient: false)
    x.send("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    x.send("$1\r\nv\r\n", fromClient: false)
    x.finish(closed: true)
    #expect(x.records.map(\.method) == ["GET"])
    #expect(x.records.map(\.applicationProtocol) == [.redis])
  }

  /// A refused connection carries no tunnel: the bytes after it are not guessed at.
  @Test func refusedSOCKS5CarriesNothing() throws {
    let x = Exchange(serverPort: 1080)
    x.handshake()
    x.send([5, 1, 0])
    x.send([5, 0], fromClient: false)
    x.send([5, 1, 0, 1, 10, 0, 0, 9, 0, 80] + Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
    x.send([5, 5, 0, 1, 0, 0, 0, 0, 0, 0], fromClient: false)
    x.finish(closed: true)
    #expect(x.records.isEmpty)
    #expect(x.requests.counters.parseFailures == 0)
  }
}

@Suite struct HTTP1NewlineSearchTests {
  /// The word-at-a-time newline search agrees with a plain scan for every position of the
  /// newline (or none) around the eight-byte words and the 64-byte switch to memchr, with and
  /// without other newline-like bytes (0x0A ^ 0x80, 0x0B, 0x09) before it.
  @Test func agreesWithAPlainScan() {
    for length in 1..<140 {
      for newlineAt in [nil] + Array(0..<length).map(Optional.some) {
        for filler: UInt8 in [0x41, 0x8A, 0x0B, 0x09] {
          var bytes = [UInt8](repeating: filler, count: length)
          if let newlineAt { bytes[newlineAt] = 0x0A }
          for start in [0, 1, 7, 9].filter({ $0 <= length }) {
            let expected = bytes[start...].firstIndex(of: 0x0A)
            let found = bytes.withUnsafeBufferPointer {
              HTTP1Parser.newline(in: $0.baseAddress!, from: start, to: length)
            }
            #expect(found == expected, "length \(length), newline \(String(describing: newlineAt)), from \(start)")
          }
        }
      }
    }
  }
}
