import FathomStore

/// One span of an assembled trace: a request as one observation point saw it, a DNS lookup, or
/// the TCP handshake a request waited for.
public struct Span: Sendable {
  /// `connect`: from a connection's first SYN to its first request, shown when the handshake was
  /// retransmitted or took long (otherwise that wait would count as the caller's own time).
  public enum Kind: String, Sendable { case dns, network, connect }
  public var id: Int
  public var parent: Int?
  public var kind: Kind
  public var request: StoredRequest
  public var depth: Int
  public var selfMicros: Int64 = 0
  /// How the span was linked to its parent: `seq` (same TCP sequence), `x-request-id`,
  /// `trace-id`, `timing` (weak), `dns` (its answer is the address the connection used).
  public var link: String
}

public struct Trace: Sendable {
  public var spans: [Span]
  /// The last span that saw a failed request, and why it is the break point.
  public var breakPoint: (span: Int, reason: String)?
  /// The span with the most self time.
  public var slowestSegment: Int?
  /// Set when the root connection used an address no DNS lookup answered (direct IP access).
  public var noDNSSeen: Bool
}

/// Linking rules (REFERENCE.md, "Linking a request's hops"; docs/tracing.md):
/// - a network span set: records with the same request TCP sequence number within the clock
///   tolerance are one request seen at several observation points (survives DNAT and SNAT),
///   ordered by observation-point rank then time; each span's parent is the previous one;
/// - hops: span sets sharing an X-Request-ID (or trace id) are one request's hops through proxies
///   and services; a hop's parent is the hop whose server is this hop's client (pod, else
///   address) and that covers it in time;
/// - calls without IDs (Redis) are children of the hop whose server pod made them, by timing;
/// - DNS: lookups by the root's client shortly before it whose answer is the address it used,
///   with the search-path misses for the same name, come first.
public struct TraceAssembler {
  let source: TraceSource
  /// Same capture host: 50 ms; across hosts 10 ms more (REFERENCE.md).
  public var toleranceMicros: Int64 = 60_000
  public var dnsWindowMicros: Int64 = 5_000_000
  /// A handshake shorter than this, and not retransmitted, is not shown as a span.
  public var connectThresholdMicros: Int64 = 10_000
  /// How far back a request's connection may have started: four SYN retransmissions (1+2+4+8 s).
  public var connectWindowMicros: Int64 = 16_000_000

  public init(source: TraceSource) { self.source = source }

  public func assemble(xRequestID: String) throws -> Trace? {
    try assemble(seeds: try source.requests(xRequestID: xRequestID), link: "x-request-id")
  }

  public func assemble(traceID: String) throws -> Trace? {
    try assemble(seeds: try source.requests(traceID: traceID), link: "trace-id")
  }

  public func assemble(requestID: Int64) throws -> Trace? {
    guard let seed = try source.request(id: requestID) else { return nil }
    if !seed.xRequestID.isEmpty, let trace = try assemble(xRequestID: seed.xRequestID) { return trace }
    return try assemble(seeds: [seed], link: "seq")
  }

  static func rank(_ point: String) -> Int {
    switch point {
    case "c": 2
    case "c-nd": 3
    case "s-nd": 10
    case "s": 11
    default: 13
    }
  }

  struct Hop {
    var spans: [StoredRequest]
    var link: String
    var start: Int64 { spans.map(\.startMicros).min() ?? 0 }
    var end: Int64 { spans.map(\.endMicros).max() ?? 0 }
    /// The client as the client's own side saw it (pod, else address).
    var client: StoredRequest { spans.first! }
    /// The server side: the span nearest the server.
    var server: StoredRequest { spans.last! }
  }

  func assemble(seeds: [StoredRequest], link: String) throws -> Trace? {
    guard !seeds.isEmpty else { return nil }
    // Complete each seed's span set by sequence number (records without the ID, e.g. a span at
    // a point where the header was cut, still belong).
    var all: [Int64: StoredRequest] = [:]
    for seed in seeds {
      all[seed.id] = seed
      if let sequence = seed.requestSequence {
        for request in try source.requests(
          requestSequence: sequence, from: seed.startMicros - toleranceMicros, to: seed.startMicros + toleranceMicros)
        where request.protocolName == seed.protocolName {
          all[request.id] = request
        }
      }
    }
    var hops = Self.spanSets(Array(all.values)).map { Hop(spans: $0, link: link) }

    // Calls without IDs made while serving a hop, children by timing (weak): Redis calls, and
    // the upstream request of a proxy that passes no ID (same method and path, within the hop).
    var calls: [StoredRequest] = []
    for hop in hops where !hop.server.serverPod.isEmpty {
      let serverSide = hop.server
      let redis = try source.requests(
        clientIP: serverSide.serverIP, protocolName: "redis", from: serverSide.startMicros, to: serverSide.endMicros)
      let upstream = try source.requests(
        clientIP: serverSide.serverIP, protocolName: serverSide.protocolName, from: serverSide.startMicros,
        to: serverSide.endMicros
      ).filter {
        $0.xRequestID.isEmpty && $0.traceID.isEmpty && $0.method == serverSide.method
          && $0.resource == serverSide.resource
      }
      for call in redis + upstream where all[call.id] == nil {
        all[call.id] = call
        calls.append(call)
      }
    }
    for set in Self.spanSets(calls) { hops.append(Hop(spans: set, link: "timing")) }
    hops.sort { $0.start < $1.start }

    // Parent of each hop: the latest-starting hop whose server is this hop's client and that
    // covers it in time.
    var parentOf: [Int?] = Array(repeating: nil, count: hops.count)
    for (index, hop) in hops.enumerated() {
      let client = hop.client
      var best: Int?
      for (candidateIndex, candidate) in hops.enumerated() where candidateIndex != index {
        let server = candidate.server
        let samePod = !client.clientPod.isEmpty && client.clientPod == server.serverPod
        let sameAddress = client.clientIP == server.serverIP
        guard samePod || sameAddress else { continue }
        guard candidate.start <= hop.start + toleranceMicros, candidate.end + toleranceMicros >= hop.end else {
          continue
        }
        if best == nil || candidate.start > hops[best!].start { best = candidateIndex }
      }
      parentOf[index] = best
    }

    // The handshake each hop's first request waited for, seen where its client is; and the
    // connections a failed hop's server tried while serving it that were never established
    // (its calls that failed before any request could be sent).
    var connects: [Int: StoredRequest] = [:]
    var failedCalls: [Int: [StoredRequest]] = [:]
    for (index, hop) in hops.enumerated() {
      connects[index] = try connect(before: hop.client)
      if hop.server.status != "ok" { failedCalls[index] = try failedConnects(during: hop.server) }
    }

    var spans: [Span] = []
    var lastSpanOfHop: [Int: Int] = [:]
    var noDNSSeen = false
    // Emit hops depth-first from the roots.
    func emit(_ index: Int, parentSpan: Int?, depth: Int) {
      var parent = parentSpan
      var level = depth
      if let connect = connects[index] {
        spans.append(
          Span(id: spans.count, parent: parentSpan, kind: .connect, request: connect, depth: depth, link: "seq"))
      }
      for (position, request) in hops[index].spans.enumerated() {
        let linkKind = position == 0 ? hops[index].link : "seq"
        spans.append(
          Span(id: spans.count, parent: parent, kind: .network, request: request, depth: level, link: linkKind))
        parent = spans.count - 1
        level += 1
      }
      lastSpanOfHop[index] = parent
      for child in hops.indices where parentOf[child] == index {
        emit(child, parentSpan: parent, depth: level)
      }
      for call in failedCalls[index] ?? [] {
        spans.append(Span(id: spans.count, parent: parent, kind: .connect, request: call, depth: level, link: "timing"))
      }
    }
    for root in hops.indices where parentOf[root] == nil {
      // DNS lookups before the root hop by its client, answering the address it connected to.
      let first = hops[root].client
      let lookups = try source.requests(
        clientIP: first.clientIP, protocolName: "dns", from: first.startMicros - dnsWindowMicros, to: first.startMicros)
      let answering = lookups.filter {
        $0.answers.split(separator: "\n").contains { $0.hasSuffix(" " + first.serverIP) }
      }
      var dnsSpans: [StoredRequest] = []
      if let answer = answering.max(by: { $0.startMicros < $1.startMicros }) {
        // The search-path misses for the same name, and the answer itself (one per observation point).
        // Search-path expansions of one typed name: an FQDN typed without the final dot is tried
        // with each suffix (answer + "." + suffix), a short name with each suffix before the
        // one that exists (same first label).
        let base = answer.domain
        let firstLabel = base.split(separator: ".").first.map(String.init) ?? base
        // Only this resolution's lookups: after the client's previous answer for the name (a
        // busy client resolves the same name for other requests within the same second).
        let previousAnswer =
          answering.filter { $0.domain == base && $0.startMicros < answer.startMicros - 50_000 }.map(\.startMicros)
          .max() ?? .min
        let related = lookups.filter {
          let sameName = $0.domain == base || $0.domain.hasPrefix(base + ".")
          let sameFirstLabel = $0.domain.split(separator: ".").first.map(String.init) == firstLabel
          return (sameName || sameFirstLabel) && $0.startMicros >= answer.startMicros - 1_000_000
            && $0.startMicros > previousAnswer && $0.startMicros <= answer.startMicros
        }
        dnsSpans = Self.spanSets(related).compactMap(\.first)
      } else if first.serverKind == "service" || first.serverKind == "node_port" || first.protocolName == "http" {
        noDNSSeen = !first.serverIP.isEmpty && !lookups.contains { $0.answers.contains(first.serverIP) }
      }
      for lookup in dnsSpans.sorted(by: { $0.startMicros < $1.startMicros }) {
        spans.append(Span(id: spans.count, parent: nil, kind: .dns, request: lookup, depth: 0, link: "dns"))
      }
      emit(root, parentSpan: nil, depth: 0)
    }

    // Self time: duration minus the direct children's durations (not below zero).
    for index in spans.indices {
      let children = spans.filter { $0.parent == index }.map(\.request.durationMicros).reduce(0, +)
      spans[index].selfMicros = max(0, spans[index].request.durationMicros - children)
    }
    let slowest = spans.filter { $0.kind != .dns }.max { $0.selfMicros < $1.selfMicros }?.id

    // Break point: the deepest failed span that has no failed descendant.
    var breakPoint: (Int, String)?
    let failed = spans.filter { $0.kind != .dns && $0.request.status != "ok" }
    if let deepest = failed.max(by: { ($0.depth, $0.request.startMicros) < ($1.depth, $1.request.startMicros) }) {
      let request = deepest.request
      if deepest.kind == .connect {
        let server =
          request.serverService.isEmpty
          ? "\(request.serverIP):\(request.serverPort)"
          : "\(request.serverService) (\(request.serverIP):\(request.serverPort))"
        breakPoint = (
          deepest.id,
          "connection to \(server)\(request.resource) at \(request.observationPoint) \(request.node); no request could be sent"
        )
        return Trace(spans: spans, breakPoint: breakPoint, slowestSegment: slowest, noDNSSeen: noDNSSeen)
      }
      let place = [
        request.observationPoint, request.node, request.serverPod.isEmpty ? request.serverIP : request.serverPod,
      ]
      .filter { !$0.isEmpty }.joined(separator: " ")
      let answer = request.code.map { "answered \($0)" } ?? request.status
      breakPoint = (
        deepest.id, "\(request.method) \(request.domain)\(request.resource) \(answer) at \(place); nothing later saw it"
      )
    }
    return Trace(spans: spans, breakPoint: breakPoint, slowestSegment: slowest, noDNSSeen: noDNSSeen)
  }

  /// The handshake `request` waited for: its connection's record at the same capture point,
  /// started shortly before it, when the request is the connection's first and the wait was
  /// long or the SYN was retransmitted; as a pseudo-request (protocol `tcp`, method `connect`).
  func connect(before request: StoredRequest) throws -> StoredRequest? {
    guard request.protocolName != "dns", request.clientPort > 0 else { return nil }
    let flows = try source.connections(
      clientIP: request.clientIP, clientPort: request.clientPort, from: request.startMicros - connectWindowMicros,
      to: request.startMicros)
    guard
      let flow = flows.filter({ $0.observationPoint == request.observationPoint && $0.node == request.node })
        .max(by: { $0.startMicros < $1.startMicros })
    else { return nil }
    let wait = request.startMicros - flow.startMicros
    guard flow.synRetransmissions > 0 || wait >= connectThresholdMicros else { return nil }
    // Only a connection's first request waits for the handshake.
    let earlier = try source.requests(
      clientIP: request.clientIP, protocolName: request.protocolName, from: flow.startMicros,
      to: request.startMicros - 1
    ).contains { $0.clientPort == request.clientPort && $0.observationPoint == request.observationPoint }
    guard !earlier else { return nil }
    var connect = request
    connect.id = -request.id - 1
    connect.startMicros = flow.startMicros
    connect.durationMicros = wait
    connect.protocolName = "tcp"
    connect.method = "connect"
    connect.domain = ""
    connect.resource = flow.synRetransmissions > 0 ? " (\(flow.synRetransmissions) SYN retransmissions)" : ""
    connect.status = "ok"
    connect.code = nil
    connect.xRequestID = ""
    connect.traceID = ""
    connect.requestSequence = nil
    connect.responseSequence = nil
    connect.serverPod = flow.serverPod.isEmpty ? request.serverPod : flow.serverPod
    return connect
  }

  /// A connection whose handshake needed retransmitted SYNs and that then carried no request:
  /// the caller gave up waiting before the answer came.
  static func answeredTooLate(_ flow: FlowFact) -> Bool {
    flow.synRetransmissions > 0 && flow.s2cPackets > 0 && flow.requests == 0
      && !notEstablished.contains(flow.closeType)
  }

  /// Close types of a connection that was never established.
  static let notEstablished: Set<String> = [
    "client_syn_repeat", "server_synack_repeat", "server_reset", "icmp_unreachable", "client_establish_reset",
    "server_establish_reset", "server_queue_lack",
  ]

  /// The connections the server of `request` opened while serving it, at its own interface, that
  /// were refused, never answered, or answered only after retransmitted SYNs and then never
  /// used (the caller had given up): one pseudo-request (protocol `tcp`, method `connect`) per
  /// address called, with how many attempts failed and how.
  func failedConnects(during request: StoredRequest) throws -> [StoredRequest] {
    guard !request.serverPod.isEmpty, !request.serverIP.isEmpty else { return [] }
    let flows = try source.connections(clientIP: request.serverIP, from: request.startMicros, to: request.endMicros)
      .filter { flow in
        flow.observationPoint == "c"
          && (Self.notEstablished.contains(flow.closeType)
            || ((flow.closeType == "timeout" || flow.closeType == "in_progress") && flow.s2cPackets == 0
              && flow.synRetransmissions > 0)
            || Self.answeredTooLate(flow))
      }
    var byServer: [String: [FlowFact]] = [:]
    for flow in flows { byServer["\(flow.serverIP):\(flow.serverPort)", default: []].append(flow) }
    return byServer.values.compactMap { attempts -> StoredRequest? in
      guard let first = attempts.min(by: { $0.startMicros < $1.startMicros }) else { return nil }
      let how: String
      switch first.closeType {
      case "server_reset": how = "refused (reset)"
      case "icmp_unreachable": how = "refused (ICMP unreachable)"
      case "client_establish_reset", "server_establish_reset": how = "reset during the handshake"
      case _ where Self.answeredTooLate(first): how = "answered only after its SYN was retransmitted, then unused"
      default: how = "never answered"
      }
      let retransmissions = attempts.reduce(0) { $0 + $1.synRetransmissions }
      var call = request
      call.id = -(1_000_000 + first.startMicros % 1_000_000_000) - Int64(first.clientPort)
      call.startMicros = first.startMicros
      call.durationMicros = max(0, (attempts.map(\.endMicros).max() ?? first.endMicros) - first.startMicros)
      call.protocolName = "tcp"
      call.method = "connect"
      call.domain = ""
      call.resource =
        " \(how): \(attempts.count) attempt\(attempts.count == 1 ? "" : "s")"
        + (retransmissions > 0 ? ", \(retransmissions) SYN retransmissions" : "")
      call.status = first.closeType
      call.code = nil
      call.clientIP = first.clientIP
      call.clientPort = first.clientPort
      call.serverIP = first.serverIP
      call.serverPort = first.serverPort
      call.observationPoint = first.observationPoint
      call.node = first.node
      call.interface = first.interface
      call.clientPod = first.clientPod
      call.serverPod = first.serverPod
      call.serverService = first.serverService
      call.serverKind = first.serverKind
      call.xRequestID = ""
      call.traceID = ""
      call.requestSequence = nil
      call.responseSequence = nil
      call.answers = ""
      return call
    }.sorted { $0.startMicros < $1.startMicros }
  }

  /// Groups records into network span sets (same request sequence number, else same client
  /// and server address), each ordered by observation-point rank then time.
  static func spanSets(_ requests: [StoredRequest]) -> [[StoredRequest]] {
    var sets: [String: [StoredRequest]] = [:]
    for request in requests {
      let key =
        request.requestSequence.map { "seq:\(request.protocolName):\($0)" }
        // Without a sequence number (UDP DNS): the client's address and port and the question
        // survive DNAT; the server address does not.
        ?? "addr:\(request.protocolName):\(request.clientIP):\(request.clientPort):\(request.method):\(request.domain):\(request.startMicros / 1_000_000)"
      sets[key, default: []].append(request)
    }
    return sets.values.map(ordered)
  }

  /// Orders one span set along the path: capture hosts by the lowest observation-point rank they
  /// saw (client-side nodes first), and within a host by time, which one clock measures. (By rank
  /// alone, a NodePort request would be wrong: on the entry node the inbound `s-nd` record comes
  /// before the SNATed `c-nd` one it turns into.)
  static func ordered(_ set: [StoredRequest]) -> [StoredRequest] {
    var byNode: [String: [StoredRequest]] = [:]
    for request in set { byNode[request.node, default: []].append(request) }
    let nodes = byNode.keys.sorted { a, b in
      let rankA = byNode[a]!.map { rank($0.observationPoint) }.min()!
      let rankB = byNode[b]!.map { rank($0.observationPoint) }.min()!
      let startA = byNode[a]!.map(\.startMicros).min()!
      let startB = byNode[b]!.map(\.startMicros).min()!
      return (rankA, startA, a) < (rankB, startB, b)
    }
    return nodes.flatMap { node in
      byNode[node]!.sorted { ($0.startMicros, rank($0.observationPoint)) < ($1.startMicros, rank($1.observationPoint)) }
    }
  }
}
