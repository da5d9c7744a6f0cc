import FathomFlows
import FathomRecords
import FathomWire

/// The protocol stage: recognises each flow's application protocol by content, reassembles TCP
/// streams, parses and pairs requests and responses into RequestLogs, and adds per-flow request
/// counts to the FlowLogs of the flow stage.
public final class RequestMeter {
  public let config: RequestConfig
  public private(set) var counters = RequestCounters()
  /// Records ready for the next stage (`drain`).
  public var output: [RequestLog] { buffer.records }
  /// How many records wait in `output` (without retaining the array, unlike `output.count`).
  public var outputCount: Int { buffer.records.count }
  private let buffer = RequestBuffer()
  /// The buffer sessions emit into; nil when the configuration keeps no records.
  private var recordBuffer: RequestBuffer? { config.keepsRecords ? buffer : nil }

  /// One session per flow-table slot, allocated once and mutated in place; flow id 0 marks a free
  /// slot (flow ids start at 1).
  private let sessions: UnsafeMutablePointer<Session>
  private let capacity: Int
  /// Slots 0..<initializedSlots hold a session (free or not). The flow table hands out its
  /// lowest free slots first, so slots are initialised as first used: a table set up whole at
  /// start touched ~30 MB before the first packet.
  private var initializedSlots = 0
  /// Protocol recognised per server endpoint, so later flows skip inference.
  private var endpointProtocols: [EndpointKey: ApplicationProtocol] = [:]
  private var capturePoints: [CapturePoint] = []
  /// HTTP/1 parsers of ended connections, reset for new ones (at most `spareParserLimit`).
  private var spareHTTP1Parsers: [HTTP1Parser] = []
  private static let spareParserLimit = 256

  struct EndpointKey: Hashable {
    var address: IPAddress
    var port: UInt16
    var transport: UInt8
  }

  /// The flow's parser: a kind and the one parser it uses. Parsers are optionals rather than enum
  /// payloads so they are mutated in place (enum payloads are copied in and out).
  struct Parser {
    enum Kind { case undecided, socks, http, http2, dns, redis, none }
    var kind = Kind.undecided
    var http: HTTP1Parser?
    var http2: HTTP2Parser?
    var dns: DNSSession?
    var redis: RedisSession?
    var socks: SOCKSHandshake?
    /// Bytes after a SOCKS handshake, held until both directions finished it; then the stage
    /// infers the tunnelled protocol from them.
    var tunnel: Sniff?

    /// Not a protocol Fathom parses (or parsing stopped): payload is ignored.
    mutating func stop() { self = Parser(kind: .none) }
  }

  struct Session {
    var identity: FlowIdentity
    var parser = Parser()
    var applicationProtocol: ApplicationProtocol?
    var attempts = 0
    var client = TCPStream()
    var server = TCPStream()
    var sink = RequestSink()
    var sniff = Sniff()
    var lastNanos: Int64 = 0
    /// The protocol is inferred inside a SOCKS tunnel: the proxy's endpoint says nothing about it.
    var insideTunnel = false

    /// An unused slot.
    static var free: Session {
      Session(
        identity: FlowIdentity(
          flowID: 0, clientIP: .zero, clientPort: 0, serverIP: .zero, serverPort: 0, capturePoint: 0))
    }
  }

  /// The first bytes of each direction while the protocol is undecided.
  struct Sniff {
    /// Bytes examined for inference; more are kept (up to `storage`) so none is lost to the parser.
    static let capacity = 256
    static let storage = 64 * 1024
    /// Prefixes shorter than this do not count as a failed inference attempt.
    static let decisionBytes = 16
    var client: [UInt8] = []
    var server: [UInt8] = []
    var clientSequence: UInt32 = 0
    var serverSequence: UInt32 = 0
    var clientNanos: Int64 = 0
    var serverNanos: Int64 = 0

    mutating func append(_ bytes: UnsafeRawBufferPointer, fromClient: Bool, sequence: UInt32, nanos: Int64) {
      if fromClient {
        if client.isEmpty {
          clientSequence = sequence
          clientNanos = nanos
        }
        client.append(contentsOf: bytes.prefix(Self.storage - client.count))
      } else {
        if server.isEmpty {
          serverSequence = sequence
          serverNanos = nanos
        }
        server.append(contentsOf: bytes.prefix(Self.storage - server.count))
      }
    }
  }

  /// `capacity` is the flow table's: one session slot per flow slot.
  public init(config: RequestConfig = RequestConfig(), capacity: Int = 65_535) {
    self.config = config
    self.capacity = capacity
    sessions = TableMemory.allocate(Session.self, count: capacity)
  }

  deinit {
    sessions.deinitialize(count: initializedSlots)
    TableMemory.free(sessions)
  }

  public func addCapturePoint(_ point: CapturePoint) -> UInt32 {
    if let index = capturePoints.firstIndex(of: point) { return UInt32(index) }
    capturePoints.append(point)
    var texts = RequestTexts()
    texts[.interface] = point.interface
    texts[.netns] = point.netns
    buffer.capturePoints.append(texts)
    return UInt32(capturePoints.count - 1)
  }

  public func drain() -> [RequestLog] {
    defer { buffer.records.removeAll(keepingCapacity: true) }
    return buffer.records
  }

  /// Lends the records to `body`, then empties the buffer keeping its storage (no allocation per
  /// call, unlike `drain` whose caller keeps the array).
  public func drain(into body: ([RequestLog]) -> Void) {
    body(buffer.records)
    // Records `body` did not keep give their text buffers to the next ones.
    var spares = RequestTexts.Spares()
    swap(&spares, &buffer.spareTexts)
    buffer.records.withUnsafeMutableBufferPointer { records in
      for index in records.indices { records[index].texts.recycle(into: &spares) }
    }
    swap(&spares, &buffer.spareTexts)
    buffer.records.removeAll(keepingCapacity: true)
  }

  // MARK: packets

  /// Parses the payload of a packet the flow table accounted to `context`.
  public func process(_ packet: DecodedPacket, context: FlowPacketContext, capturePoint: UInt32) {
    guard packet.ipProtocol == 6 || packet.ipProtocol == 17, context.slot >= 0, context.slot < capacity else { return }
    if context.slot >= initializedSlots {
      (sessions + initializedSlots).initialize(repeating: Session.free, count: context.slot + 1 - initializedSlots)
      initializedSlots = context.slot + 1
    }
    if packet.payload.count == 0 {
      // A SYN or SYN/ACK tells where the stream's data begins.
      if packet.tcpFlags.contains(.syn) {
        if sessions[context.slot].identity.flowID != context.flowID {
          sessions[context.slot] = Session(identity: identity(packet, context: context, capturePoint: capturePoint))
          sessions[context.slot].sink.buffer = recordBuffer
        }
        if context.fromClient {
          sessions[context.slot].client.start(at: packet.sequence &+ 1)
        } else {
          sessions[context.slot].server.start(at: packet.sequence &+ 1)
        }
      }
      return
    }
    if sessions[context.slot].identity.flowID != context.flowID {
      sessions[context.slot] = Session(identity: identity(packet, context: context, capturePoint: capturePoint))
      sessions[context.slot].sink.buffer = recordBuffer
    }
    process(packet, fromClient: context.fromClient, session: &sessions[context.slot])
  }

  private func process(_ packet: DecodedPacket, fromClient: Bool, session: inout Session) {
    session.lastNanos = packet.timestampNanos
    if session.parser.kind == .none { return }
    if packet.ipProtocol == 17 {
      if session.parser.kind == .undecided { decide(&session, packet.payload, transport: 17) }
      if session.parser.kind == .dns {
        session.parser.dns!.message(
          packet.payload, fromClient: fromClient, sequence: nil, nanos: packet.timestampNanos,
          identity: session.identity, config: config, sink: &session.sink)
        flush(&session)
      }
      return
    }
    feed(&session, packet, fromClient: fromClient)
  }

  private func identity(_ packet: DecodedPacket, context: FlowPacketContext, capturePoint: UInt32) -> FlowIdentity {
    let fromClient = context.fromClient
    return FlowIdentity(
      flowID: context.flowID, clientIP: fromClient ? packet.source : packet.destination,
      clientPort: fromClient ? packet.sourcePort : packet.destinationPort,
      serverIP: fromClient ? packet.destination : packet.source,
      serverPort: fromClient ? packet.destinationPort : packet.sourcePort, capturePoint: capturePoint)
  }

  /// Inference by content, with the server port only as a hint; remembered per server endpoint.
  /// `fromClient` tells whose bytes `payload` holds: only a client opens a SOCKS handshake.
  private func decide(
    _ session: inout Session, _ payload: UnsafeRawBufferPointer, transport: UInt8, fromClient: Bool = true
  ) {
    let identity = session.identity
    let key = EndpointKey(address: identity.serverIP, port: identity.serverPort, transport: transport)
    var found = session.insideTunnel ? nil : endpointProtocols[key]
    if found == nil {
      if transport == 17 {
        // NetBIOS name service shares DNS's wire format but is not DNS.
        let netbios = identity.serverPort == 137 || identity.clientPort == 137
        if !netbios, DNSSession.looksLikeDNS(payload), DNSMessage(payload, questionTexts: false) != nil { found = .dns }
      } else if identity.serverPort == 53, payload.count >= 14,
        DNSSession.looksLikeDNS(UnsafeRawBufferPointer(rebasing: payload[2...]))
      {
        found = .dns
      } else if HTTP2Parser.looksLikeHTTP2(payload).0 {
        found = .http2
      } else if HTTP1Parser.looksLikeHTTP(payload) {
        found = .http
      } else if RedisSession.looksLikeRESP(payload, portHint: identity.serverPort == 6379) {
        found = .redis
      }
      if found == nil, transport == 6, fromClient, !session.insideTunnel, SOCKSHandshake.looksLikeSOCKS(payload) {
        // Not cached: each connection to a proxy opens with its own handshake.
        session.parser = Parser(kind: .socks, socks: SOCKSHandshake())
        return
      }
      if let found, !session.insideTunnel {
        if endpointProtocols.count >= config.endpointCacheCapacity {
          endpointProtocols.removeAll(keepingCapacity: true)
        }
        endpointProtocols[key] = found
      }
    }
    switch found {
    case .http: session.parser = Parser(kind: .http, http: spareHTTP1Parsers.popLast() ?? HTTP1Parser())
    case .http2, .grpc:
      // The preface is expected only when the stream starts with it (not a capture begun later).
      session.parser = Parser(
        kind: .http2, http2: HTTP2Parser(expectPreface: HTTP2Parser.looksLikeHTTP2(payload).preface))
    case .dns: session.parser = Parser(kind: .dns, dns: DNSSession())
    case .redis: session.parser = Parser(kind: .redis, redis: RedisSession())
    case nil:
      session.attempts += 1
      if session.attempts >= config.inferenceAttempts { session.parser.stop() }
      return
    }
    session.applicationProtocol = found
    counters.flowsWithProtocol += 1
  }

  private func feed(_ session: inout Session, _ packet: DecodedPacket, fromClient: Bool) {
    let nanos = packet.timestampNanos
    if session.parser.kind != .undecided {
      let inOrder =
        fromClient
        ? session.client.takeInOrder(sequence: packet.sequence, count: packet.payload.count)
        : session.server.takeInOrder(sequence: packet.sequence, count: packet.payload.count)
      if inOrder {
        Self.parse(
          &session.parser, packet.payload, fromClient: fromClient, sequence: packet.sequence, nanos: nanos,
          identity: session.identity, config: config, sink: &session.sink)
        if Self.takeTunnel(&session.parser, into: &session.sniff) {
          session.insideTunnel = true
          decideTunnelled(&session)
        }
        flush(&session)
        return
      }
    } else if session.sniff.client.isEmpty, session.sniff.server.isEmpty,
      fromClient
        ? session.client.takeInOrder(sequence: packet.sequence, count: packet.payload.count)
        : session.server.takeInOrder(sequence: packet.sequence, count: packet.payload.count)
    {
      // A flow's first segment, in order: decide from it in place rather than through the sniff
      // buffer (which costs an allocation and a copy per flow).
      decideInPlace(&session, packet, fromClient: fromClient)
      flush(&session)
      return
    }
    let config = self.config
    var dropped: UInt64 = 0
    var gaps: UInt64 = 0
    var tunnelled = false
    // The parser and sink move out of the session while the stream delivers, so that they are
    // mutated in place. (Separate variables: overlapping accesses to two properties of one captured
    // variable would trip the runtime exclusivity check.)
    var parser = Parser()
    var sink = RequestSink()
    var sniff = Sniff()
    swap(&parser, &session.parser)
    swap(&sink, &session.sink)
    swap(&sniff, &session.sniff)
    let identity = session.identity
    let deliver: (TCPStream.Event) -> Void = { event in
      switch event {
      case .gap:
        gaps += 1
        sniff = Sniff()
        Self.gap(&parser, fromClient: fromClient)
      case .data(let bytes, let sequence, let nanos):
        if parser.kind == .undecided {
          sniff.append(bytes, fromClient: fromClient, sequence: sequence, nanos: nanos)
          return
        }
        Self.parse(
          &parser, bytes, fromClient: fromClient, sequence: sequence, nanos: nanos, identity: identity,
          config: config, sink: &sink)
        if Self.takeTunnel(&parser, into: &sniff) { tunnelled = true }
      }
    }
    if fromClient {
      session.client.push(
        sequence: packet.sequence, payload: packet.payload, nanos: nanos, config: config, dropped: &dropped,
        deliver: deliver)
    } else {
      session.server.push(
        sequence: packet.sequence, payload: packet.payload, nanos: nanos, config: config, dropped: &dropped,
        deliver: deliver)
    }
    swap(&parser, &session.parser)
    swap(&sink, &session.sink)
    swap(&sniff, &session.sniff)
    if tunnelled {
      session.insideTunnel = true
      decideTunnelled(&session)
    } else if session.parser.kind == .undecided {
      decideFromSniff(&session, fromClient: fromClient)
    }
    counters.segmentsDropped += dropped
    counters.streamGaps += gaps
    flush(&session)
  }

  /// Tries inference on the stream's first bytes (a request may arrive a byte per segment); once
  /// decided, the parser reads those bytes first.
  private func decideFromSniff(_ session: inout Session, fromClient: Bool) {
    let bytes = fromClient ? session.sniff.client : session.sniff.server
    guard !bytes.isEmpty else { return }
    let attemptsBefore = session.attempts
    bytes.withUnsafeBytes {
      decide(
        &session, UnsafeRawBufferPointer(rebasing: $0.prefix(Sniff.capacity)), transport: 6, fromClient: fromClient)
    }
    if session.parser.kind == .undecided {
      Self.undecided(&session, prefix: bytes.count, attemptsBefore: attemptsBefore)
      return
    }
    let sniff = session.sniff
    session.sniff = Sniff()
    for client in [true, false] {
      let buffered = client ? sniff.client : sniff.server
      guard !buffered.isEmpty else { continue }
      buffered.withUnsafeBytes { raw in
        Self.parse(
          &session.parser, raw, fromClient: client, sequence: client ? sniff.clientSequence : sniff.serverSequence,
          nanos: client ? sniff.clientNanos : sniff.serverNanos, identity: session.identity, config: config,
          sink: &session.sink)
      }
    }
  }

  /// `decideFromSniff` for a first segment that nothing precedes: decided, the parser reads it
  /// where it lies; undecided, it is kept in the sniff for the next attempt.
  private func decideInPlace(_ session: inout Session, _ packet: DecodedPacket, fromClient: Bool) {
    let payload = packet.payload
    let attemptsBefore = session.attempts
    decide(
      &session, UnsafeRawBufferPointer(rebasing: payload.prefix(Sniff.capacity)), transport: 6, fromClient: fromClient)
    switch session.parser.kind {
    case .undecided:
      session.sniff.append(payload, fromClient: fromClient, sequence: packet.sequence, nanos: packet.timestampNanos)
      Self.undecided(&session, prefix: payload.count, attemptsBefore: attemptsBefore)
    case .none:
      break
    default:
      Self.parse(
        &session.parser, payload, fromClient: fromClient, sequence: packet.sequence, nanos: packet.timestampNanos,
        identity: session.identity, config: config, sink: &session.sink)
      if Self.takeTunnel(&session.parser, into: &session.sniff) {
        session.insideTunnel = true
        decideTunnelled(&session)
      }
    }
  }

  /// A prefix of `prefix` bytes left the protocol undecided: short prefixes get more chances (only
  /// full-sized ones count as failed attempts); a prefix as long as inference reads ends it.
  private static func undecided(_ session: inout Session, prefix: Int, attemptsBefore: Int) {
    if prefix < Sniff.decisionBytes && prefix < Sniff.capacity { session.attempts = attemptsBefore }
    if prefix >= Sniff.capacity { session.parser.stop() }
  }

  /// Once a SOCKS handshake is over both ways, its tunnel's first bytes become the sniff the
  /// tunnelled protocol is inferred from. True when that happened.
  private static func takeTunnel(_ parser: inout Parser, into sniff: inout Sniff) -> Bool {
    guard parser.kind == .undecided, let tunnel = parser.tunnel else { return false }
    parser.tunnel = nil
    sniff = tunnel
    return true
  }

  /// Infers the tunnelled protocol from whichever direction's bytes tell.
  private func decideTunnelled(_ session: inout Session) {
    decideFromSniff(&session, fromClient: true)
    if session.parser.kind == .undecided { decideFromSniff(&session, fromClient: false) }
  }

  private static func parse(
    _ parser: inout Parser, _ bytes: UnsafeRawBufferPointer, fromClient: Bool, sequence: UInt32, nanos: Int64,
    identity: FlowIdentity, config: RequestConfig, sink: inout RequestSink
  ) {
    switch parser.kind {
    case .http:
      let used = parser.http!.feed(
        bytes, fromClient: fromClient, sequence: sequence, nanos: nanos, identity: identity, config: config, sink: &sink
      )
      if parser.http!.upgradedToHTTP2 {
        // h2c: the connection continues as HTTP/2 (the client sends the preface next); frames that
        // follow the 101 in the same segment are HTTP/2 already.
        let upgradeRequest = parser.http!.upgradeRequest
        parser = Parser(kind: .http2, http2: HTTP2Parser(expectPreface: true))
        if let upgradeRequest { parser.http2!.adoptUpgradedRequest(upgradeRequest) }
        if used < bytes.count {
          parser.http2!.feed(
            UnsafeRawBufferPointer(rebasing: bytes[used...]), fromClient: fromClient,
            sequence: sequence &+ UInt32(truncatingIfNeeded: used), nanos: nanos, identity: identity, config: config,
            sink: &sink)
        }
      }
    case .http2:
      parser.http2!.feed(
        bytes, fromClient: fromClient, sequence: sequence, nanos: nanos, identity: identity, config: config, sink: &sink
      )
    case .dns:
      parser.dns!.stream(
        bytes, fromClient: fromClient, sequence: sequence, nanos: nanos, identity: identity, config: config, sink: &sink
      )
    case .redis:
      parser.redis!.feed(
        bytes, fromClient: fromClient, sequence: sequence, nanos: nanos, identity: identity, config: config, sink: &sink
      )
    case .socks:
      let used = parser.socks!.feed(bytes, fromClient: fromClient)
      if parser.socks!.failed {
        parser.stop()
        return
      }
      if used < bytes.count {
        if parser.tunnel == nil { parser.tunnel = Sniff() }
        parser.tunnel!.append(
          UnsafeRawBufferPointer(rebasing: bytes[used...]), fromClient: fromClient,
          sequence: sequence &+ UInt32(truncatingIfNeeded: used), nanos: nanos)
      }
      if parser.socks!.established {
        parser.kind = .undecided
        parser.socks = nil
        if parser.tunnel == nil { parser.tunnel = Sniff() }
      }
    case .undecided, .none:
      break
    }
  }

  private static func gap(_ parser: inout Parser, fromClient: Bool) {
    switch parser.kind {
    case .http: parser.http!.gap(fromClient: fromClient)
    case .http2: parser.http2!.gap(fromClient: fromClient)
    case .dns: parser.dns!.gap()
    case .redis: parser.redis!.gap(fromClient: fromClient)
    case .socks: parser.stop()  // a handshake cannot be resumed mid-way
    case .undecided, .none: break
    }
  }

  /// Moves a session's finished records to the output.
  private func flush(_ session: inout Session) {
    counters.parseFailures += session.sink.parseFailures
    counters.pendingEvicted += session.sink.evicted
    session.sink.parseFailures = 0
    session.sink.evicted = 0
    counters.requestsEmitted += session.sink.emitted
    session.sink.emitted = 0
  }

  // MARK: flow records

  /// Adds each flow's request counts to its record; a flow's last record ends its session, and its
  /// unanswered requests become timeouts (or `unknown` when only the capture ended).
  public func annotate(_ flows: inout [FlowLog]) {
    for index in flows.indices {
      let flow = flows[index]
      guard flow.flowSlot >= 0, flow.flowSlot < initializedSlots else { continue }
      guard sessions[flow.flowSlot].identity.flowID == flow.flowID else { continue }
      if flow.isFinal { finish(&sessions[flow.flowSlot], closeType: flow.closeType, endNanos: flow.endMicros * 1000) }
      flows[index].applicationProtocol = sessions[flow.flowSlot].applicationProtocol
      flows[index].application = sessions[flow.flowSlot].sink.counts
      sessions[flow.flowSlot].sink.counts = ApplicationCounts()
      if flow.isFinal { sessions[flow.flowSlot] = Session.free }
    }
  }

  private func finish(_ session: inout Session, closeType: CloseType, endNanos: Int64) {
    let unanswered: RequestStatus = closeType == .inProgress ? .unknown : .timeout
    let identity = session.identity
    let config = self.config
    var parser = Parser()
    var sink = RequestSink()
    swap(&parser, &session.parser)
    swap(&sink, &session.sink)
    var gaps: UInt64 = 0
    for fromClient in [true, false] {
      let deliver: (TCPStream.Event) -> Void = { event in
        switch event {
        case .gap:
          gaps += 1
          Self.gap(&parser, fromClient: fromClient)
        case .data(let bytes, let sequence, let nanos):
          Self.parse(
            &parser, bytes, fromClient: fromClient, sequence: sequence, nanos: nanos, identity: identity,
            config: config, sink: &sink)
        }
      }
      if fromClient { session.client.flush(deliver: deliver) } else { session.server.flush(deliver: deliver) }
    }
    switch parser.kind {
    case .http:
      parser.http!.finish(nanos: endNanos, unanswered: unanswered, identity: identity, config: config, sink: &sink)
    case .http2: parser.http2!.finish(unanswered: unanswered, identity: identity, sink: &sink)
    case .dns: parser.dns!.finish(unanswered: unanswered, identity: identity, sink: &sink)
    case .redis: parser.redis!.finish(nanos: endNanos, unanswered: unanswered, identity: identity, sink: &sink)
    case .socks, .undecided, .none: break
    }
    swap(&sink, &session.sink)
    if parser.kind == .http, spareHTTP1Parsers.count < Self.spareParserLimit, isKnownUniquelyReferenced(&parser.http!) {
      parser.http!.reset()
      spareHTTP1Parsers.append(parser.http!)
    }
    session.parser.stop()
    counters.streamGaps += gaps
    flush(&session)
  }

  /// Ends every session (end of input without flow records, e.g. tests).
  public func finishAll() {
    for index in 0..<initializedSlots where sessions[index].identity.flowID != 0 {
      finish(&sessions[index], closeType: .inProgress, endNanos: sessions[index].lastNanos)
      sessions[index] = Session.free
    }
  }
}
