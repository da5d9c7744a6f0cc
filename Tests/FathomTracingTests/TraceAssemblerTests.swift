import Testing

@testable import FathomStore
@testable import FathomTracing

/// An in-memory TraceSource over a fixed list of records.
struct MemorySource: TraceSource {
  var records: [StoredRequest]
  var flows: [FlowFact] = []
  func requests(xRequestID: String) throws -> [StoredRequest] { records.filter { $0.xRequestID == xRequestID } }
  func requests(traceID: String) throws -> [StoredRequest] { records.filter { $0.traceID == traceID } }
  func request(id: Int64) throws -> StoredRequest? { records.first { $0.id == id } }
  func requests(requestSequence: Int64, from: Int64, to: Int64) throws -> [StoredRequest] {
    records.filter { $0.requestSequence == requestSequence && (from...to).contains($0.startMicros) }
  }
  func requests(clientIP: String, protocolName: String, from: Int64, to: Int64) throws -> [StoredRequest] {
    records.filter {
      $0.clientIP == clientIP && $0.protocolName == protocolName && (from...to).contains($0.startMicros)
    }
  }
  func candidates(service: String, onlyErrors: Bool, slowerThanMicros: Int64?, since: Int64, limit: Int) throws
    -> [StoredRequest]
  { [] }
  func connections(clientIP: String, clientPort: Int, from: Int64, to: Int64) throws -> [FlowFact] {
    flows.filter { $0.clientIP == clientIP && $0.clientPort == clientPort && (from...to).contains($0.startMicros) }
  }
  func connections(clientIP: String, from: Int64, to: Int64) throws -> [FlowFact] {
    flows.filter { $0.clientIP == clientIP && (from...to).contains($0.startMicros) }
  }
}

@Suite struct TraceAssemblerTests {
  /// A pod calls a Service by a short name: the search-path miss and the answer, then the request
  /// seen at the client's veth, both node uplinks and the server's veth (DNAT in between), then
  /// the server's own call to a second Service that fails with 503.
  static let records: [StoredRequest] = {
    var id: Int64 = 0
    func request(
      _ point: String, _ node: String, start: Int64, duration: Int64, client: (String, String),
      server: (String, String),
      serverKind: String = "pod", service: String = "", seq: Int64?, code: Int? = 200, status: String = "ok",
      protocolName: String = "http", domain: String = "", answers: String = "", xid: String = "abc"
    ) -> StoredRequest {
      id += 1
      return StoredRequest(
        id: id, startMicros: start, durationMicros: duration, protocolName: protocolName,
        method: protocolName == "dns" ? "A" : "GET", domain: domain, resource: protocolName == "dns" ? domain : "/",
        status: status, code: code, clientIP: client.0, clientPort: 40000, serverIP: server.0, serverPort: 80,
        observationPoint: point, node: node, clientPod: client.1, serverPod: server.1, serverService: service,
        serverKind: serverKind, xRequestID: protocolName == "dns" ? "" : xid, requestSequence: seq, answers: answers)
    }
    let client = ("10.244.1.6", "shop/loadgen")
    let web = ("10.244.2.3", "shop/web")
    let clusterIP = ("10.96.100.3", "")
    let dns = ("10.96.0.10", "")
    return [
      request(
        "c", "node-1", start: 1_000, duration: 300, client: client, server: dns, serverKind: "service", seq: nil,
        code: 3,
        status: "client_error", protocolName: "dns", domain: "web.shop.shop.svc.cluster.local"),
      request(
        "c", "node-1", start: 1_400, duration: 300, client: client, server: dns, serverKind: "service", seq: nil,
        code: 0,
        protocolName: "dns", domain: "web.shop.svc.cluster.local", answers: "A 10.96.100.3"),
      // The request: s-nd and s on node-2 were captured on another host (clock 3 µs apart).
      request("s", "node-2", start: 2_503, duration: 9_000, client: client, server: web, seq: 7),
      request(
        "c", "node-1", start: 2_000, duration: 10_000, client: client, server: clusterIP, serverKind: "service",
        service: "shop/web", seq: 7),
      request("s-nd", "node-2", start: 2_403, duration: 9_200, client: client, server: web, seq: 7),
      request("c-nd", "node-1", start: 2_100, duration: 9_800, client: client, server: web, seq: 7),
      // web's own call to the api Service, refused with 503 by the api pod.
      request(
        "c", "node-2", start: 4_000, duration: 5_000, client: web, server: ("10.96.100.9", ""), serverKind: "service",
        service: "shop/api", seq: 99, code: 503, status: "server_error"),
      request(
        "s", "node-2", start: 4_100, duration: 4_800, client: web, server: ("10.244.2.9", "shop/api"), seq: 99,
        code: 503,
        status: "server_error"),
    ]
  }()

  @Test func spansFollowThePathAndTheBreakPointIsFound() throws {
    let trace = try #require(
      try TraceAssembler(source: MemorySource(records: Self.records)).assemble(xRequestID: "abc"))
    let summary = trace.spans.map { "\($0.kind.rawValue):\($0.request.observationPoint):\($0.request.node)" }
    #expect(
      summary == [
        "dns:c:node-1", "dns:c:node-1", "network:c:node-1", "network:c-nd:node-1", "network:s-nd:node-2",
        "network:s:node-2",
        "network:c:node-2", "network:s:node-2",
      ])
    try #require(trace.spans.count == 8)
    // Parent = previous span in a set; the call hangs under the server span of the request.
    #expect(trace.spans[3].parent == 2 && trace.spans[5].parent == 4)
    #expect(trace.spans[6].parent == 5 && trace.spans[7].parent == 6)
    #expect(!trace.noDNSSeen)
    #expect(trace.breakPoint?.span == 7)
    #expect(trace.breakPoint?.reason.contains("503") == true)
    // Self time: the server span of the request waited 4.8 ms of its 9 ms on the call.
    #expect(trace.spans[5].selfMicros == 9_000 - 5_000)
    #expect(trace.slowestSegment == 7)
    let json = trace.jsonObject
    #expect((json["spans"] as? [[String: Any]])?.count == 8)
  }

  /// web's connection to the api Service: its SYN was retransmitted, so the handshake before the
  /// call is a span of its own (a child of web's server span, before the call), not web's time.
  @Test func aRetransmittedHandshakeIsItsOwnSegment() throws {
    func flow(start: Int64, synRetransmissions: Int) -> FlowFact {
      FlowFact(
        startMicros: start, endMicros: 9_000, node: "node-2", interface: "veth1", observationPoint: "c",
        clientIP: "10.244.2.3", clientPort: 40000, serverIP: "10.96.100.9", serverPort: 80, clientKind: "pod",
        serverKind: "service", clientPod: "shop/web", serverPod: "", serverService: "shop/api",
        closeType: "client_fin", c2sPackets: 5, s2cPackets: 4, retransmissions: 0,
        synRetransmissions: synRetransmissions)
    }
    var source = MemorySource(records: Self.records)
    source.flows = [flow(start: 3_000, synRetransmissions: 1)]
    let trace = try #require(try TraceAssembler(source: source).assemble(xRequestID: "abc"))
    let connect = try #require(trace.spans.first { $0.kind == .connect })
    #expect(connect.parent == 5 && connect.request.startMicros == 3_000 && connect.request.durationMicros == 1_000)
    #expect(connect.request.resource.contains("1 SYN retransmission"))
    #expect(trace.spans[5].selfMicros == 9_000 - 5_000 - 1_000)
    // A quick handshake without retransmission is not a span; neither is one a request waited
    // for when another request used the connection first.
    source.flows = [flow(start: 3_990, synRetransmissions: 0)]
    #expect(
      try TraceAssembler(source: source).assemble(xRequestID: "abc")?.spans.contains { $0.kind == .connect } == false)
    source.flows = [flow(start: 3_000, synRetransmissions: 1)]
    var earlier = Self.records[6]
    earlier.id = 100
    earlier.startMicros = 3_500
    earlier.requestSequence = 98
    earlier.xRequestID = "other"
    source.records.append(earlier)
    #expect(
      try TraceAssembler(source: source).assemble(xRequestID: "abc")?.spans.contains { $0.kind == .connect } == false)
  }

  /// web answers 502 because its connections to the api Service were never answered (a stale
  /// rule sends the SYNs to a pod that is gone): no request reached api, so the break point is
  /// web's failed connection, a span of its own that took web's time.
  @Test func aConnectionNeverAnsweredIsTheBreakPoint() throws {
    var records = Array(Self.records.prefix(6))
    records[2].code = 502
    records[2].status = "server_error"
    func flow(start: Int64, end: Int64, close: String, synRetransmissions: Int, s2c: Int) -> FlowFact {
      FlowFact(
        startMicros: start, endMicros: end, node: "node-2", interface: "veth1", observationPoint: "c",
        clientIP: "10.244.2.3", clientPort: Int(start), serverIP: "10.96.100.9", serverPort: 80, clientKind: "pod",
        serverKind: "service", clientPod: "shop/web", serverPod: "", serverService: "shop/api", closeType: close,
        c2sPackets: 1 + synRetransmissions, s2cPackets: s2c, retransmissions: 0, synRetransmissions: synRetransmissions)
    }
    var source = MemorySource(records: records)
    source.flows = [
      flow(start: 3_000, end: 7_000, close: "client_syn_repeat", synRetransmissions: 2, s2c: 0),
      flow(start: 7_500, end: 11_000, close: "timeout", synRetransmissions: 1, s2c: 0),
      // An answered connection during the same request is not a failure.
      flow(start: 4_000, end: 5_000, close: "client_fin", synRetransmissions: 0, s2c: 3),
    ]
    let trace = try #require(try TraceAssembler(source: source).assemble(xRequestID: "abc"))
    let failed = trace.spans.filter { $0.kind == .connect }
    #expect(failed.count == 1)
    let call = try #require(failed.first)
    #expect(trace.spans[call.parent!].request.observationPoint == "s")
    #expect(call.request.startMicros == 3_000 && call.request.durationMicros == 8_000)
    let breakPoint = try #require(trace.breakPoint)
    #expect(breakPoint.span == call.id)
    #expect(
      breakPoint.reason
        == "connection to shop/api (10.96.100.9:80) never answered: 2 attempts, 3 SYN retransmissions at c node-2; no request could be sent"
    )
    #expect(trace.slowestSegment == call.id)
    // A server that answered well made no failed call worth showing.
    source.records = Array(Self.records.prefix(6))
    #expect(
      try TraceAssembler(source: source).assemble(xRequestID: "abc")?.spans.contains { $0.kind == .connect } == false)
  }

  /// web gave up on a connection whose SYN the stale rule sent nowhere; the retransmitted SYN
  /// was answered after web had answered 502, and web never sent a request on it. That
  /// connection is the break point; a late-answered connection web did use is not a failure.
  @Test func aConnectionAnsweredTooLateIsTheBreakPoint() throws {
    var records = Array(Self.records.prefix(6))
    records[2].code = 502
    records[2].status = "server_error"
    func flow(port: Int, requests: Int) -> FlowFact {
      var fact = FlowFact(
        startMicros: 3_000, endMicros: 12_000, node: "node-2", interface: "veth1", observationPoint: "c",
        clientIP: "10.244.2.3", clientPort: port, serverIP: "10.96.100.9", serverPort: 80, clientKind: "pod",
        serverKind: "service", clientPod: "shop/web", serverPod: "", serverService: "shop/api", closeType: "finish",
        c2sPackets: 7, s2cPackets: 2, retransmissions: 0, synRetransmissions: 3)
      fact.requests = requests
      return fact
    }
    var source = MemorySource(records: records)
    source.flows = [flow(port: 40_001, requests: 0)]
    let trace = try #require(try TraceAssembler(source: source).assemble(xRequestID: "abc"))
    let breakPoint = try #require(trace.breakPoint)
    #expect(trace.spans[breakPoint.span].kind == .connect)
    #expect(breakPoint.reason.contains("answered only after its SYN was retransmitted, then unused: 1 attempt, 3 SYN"))
    source.flows = [flow(port: 40_001, requests: 1)]
    #expect(
      try TraceAssembler(source: source).assemble(xRequestID: "abc")?.spans.contains { $0.kind == .connect } == false)
  }

  /// A busy client resolved the same name for an earlier request 200 ms before: only this
  /// request's resolution (its search-path miss and answer) is in its trace.
  @Test func onlyTheRequestsOwnResolutionIsShown() throws {
    var earlier = Self.records.filter { $0.protocolName == "dns" }
    for index in earlier.indices {
      earlier[index].id += 1000
      earlier[index].startMicros -= 200_000
      earlier[index].clientPort += 1
    }
    let trace = try #require(
      try TraceAssembler(source: MemorySource(records: Self.records + earlier)).assemble(xRequestID: "abc"))
    let lookups = trace.spans.filter { $0.kind == .dns }
    #expect(lookups.map(\.request.startMicros) == [1_000, 1_400])
  }

  /// web proxies the request upstream without passing the ID: the upstream request (same method
  /// and path, within web's span) is linked by timing, marked weak; another path is not.
  @Test func aProxyThatPassesNoIDIsLinkedByTiming() throws {
    var upstream = Self.records[2]  // the request as web saw it, at s on node-2
    upstream.id = 200
    upstream.startMicros = 3_000
    upstream.durationMicros = 500
    upstream.clientIP = "10.244.2.3"
    upstream.clientPod = "shop/web"
    upstream.serverIP = "10.244.2.7"
    upstream.serverPod = "shop/backend"
    upstream.xRequestID = ""
    upstream.requestSequence = 500
    var other = upstream
    other.id = 201
    other.startMicros = 3_600
    other.resource = "/other"
    other.requestSequence = 501
    let trace = try #require(
      try TraceAssembler(source: MemorySource(records: Self.records + [upstream, other])).assemble(xRequestID: "abc"))
    let linked = trace.spans.filter { $0.request.serverPod == "shop/backend" }
    #expect(linked.map(\.request.id) == [200])
    #expect(linked.first?.link == "timing")
    #expect(linked.first.flatMap(\.parent).map { trace.spans[$0].request.serverPod } == "shop/web")
  }

  @Test func aRequestToAnAddressNoLookupAnsweredIsMarked() throws {
    let records = Self.records.filter { $0.protocolName != "dns" }
    let trace = try #require(try TraceAssembler(source: MemorySource(records: records)).assemble(xRequestID: "abc"))
    #expect(trace.noDNSSeen)
    #expect(try TraceAssembler(source: MemorySource(records: records)).assemble(xRequestID: "nope") == nil)
  }
}
