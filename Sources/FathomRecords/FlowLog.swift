/// Transport protocol of a flow.
public enum L4Protocol: UInt8, Sendable, CaseIterable, CustomStringConvertible {
  case tcp = 6
  case udp = 17
  case icmp = 1
  case icmpv6 = 58

  /// The name as written in records, without a String allocation.
  public var name: StaticString {
    switch self {
    case .tcp: "tcp"
    case .udp: "udp"
    case .icmp: "icmp"
    case .icmpv6: "icmpv6"
    }
  }

  public var description: String { name.description }
}

/// How a flow ended, following DeepFlow's close types (REFERENCE.md, "Close types").
public enum CloseType: String, Sendable, CaseIterable {
  /// FIN handshake completed by both sides.
  case finish
  /// Client reset an established connection.
  case clientRst = "client_rst"
  /// Server reset an established connection.
  case serverRst = "server_rst"
  /// Still established when the established timeout expired.
  case timeout
  /// SYNs with no SYN/ACK: the server never answered.
  case clientSynRepeat = "client_syn_repeat"
  /// SYN/ACK with no final ACK from the client.
  case serverSynAckRepeat = "server_synack_repeat"
  /// The server answered the SYN with RST, or an ICMP unreachable quoted the SYN: refused.
  case serverReset = "server_reset"
  /// The client's handshake ACK was seen but the server kept repeating SYN/ACK: accept queue full.
  case serverQueueLack = "server_queue_lack"
  /// A new SYN reused the ports of a connection that had not been closed.
  case clientSourcePortReuse = "client_source_port_reuse"
  /// The client sent FIN; the server never did.
  case clientHalfClose = "client_half_close"
  /// The server sent FIN; the client never did.
  case serverHalfClose = "server_half_close"
  /// The client reset the connection during the handshake.
  case clientEstablishReset = "client_establish_reset"
  /// The server reset the connection during the handshake (after its SYN/ACK).
  case serverEstablishReset = "server_establish_reset"
  /// A periodic record of a flow that is still alive (one per report interval).
  case forcedReport = "forced_report"
  /// The capture ended before the flow did and before any timeout expired.
  case inProgress = "in_progress"
  /// Removed from a full flow table to make room for a new flow.
  case evicted
  /// UDP/ICMP flow idle for longer than its timeout (not an error for datagram protocols).
  case idle
  /// A UDP flow answered by an ICMP destination-unreachable.
  case icmpUnreachable = "icmp_unreachable"

  /// The raw value without a String allocation, for record writers.
  public var name: StaticString {
    switch self {
    case .finish: "finish"
    case .clientRst: "client_rst"
    case .serverRst: "server_rst"
    case .timeout: "timeout"
    case .clientSynRepeat: "client_syn_repeat"
    case .serverSynAckRepeat: "server_synack_repeat"
    case .serverReset: "server_reset"
    case .serverQueueLack: "server_queue_lack"
    case .clientSourcePortReuse: "client_source_port_reuse"
    case .clientHalfClose: "client_half_close"
    case .serverHalfClose: "server_half_close"
    case .clientEstablishReset: "client_establish_reset"
    case .serverEstablishReset: "server_establish_reset"
    case .forcedReport: "forced_report"
    case .inProgress: "in_progress"
    case .evicted: "evicted"
    case .idle: "idle"
    case .icmpUnreachable: "icmp_unreachable"
    }
  }
}

/// The health class of a flow, as DeepFlow's flow status.
public enum FlowStatus: String, Sendable, CaseIterable {
  case ok
  case clientError = "client_error"
  case serverError = "server_error"
  case timeout

  public var name: StaticString {
    switch self {
    case .ok: "ok"
    case .clientError: "client_error"
    case .serverError: "server_error"
    case .timeout: "timeout"
    }
  }
}

/// Sum, count and maximum of a latency in microseconds over a flow or report interval.
public struct LatencyStats: Sendable, Equatable {
  public var sumMicros: UInt64 = 0
  public var count: UInt32 = 0
  public var maxMicros: UInt32 = 0

  public init() {}

  @inlinable public mutating func add(_ micros: UInt32) {
    sumMicros &+= UInt64(micros)
    count &+= 1
    if micros > maxMicros { maxMicros = micros }
  }

  public var meanMicros: UInt64 { count == 0 ? 0 : sumMicros / UInt64(count) }
}

/// Figures of one direction of a flow.
public struct DirectionStats: Sendable, Equatable {
  public var packets: UInt64 = 0
  /// IP-level bytes (IP header and everything after it), as Zeek's `ip_bytes`.
  public var l3Bytes: UInt64 = 0
  /// Whole frames as on the wire, link headers included (Arkime's and DeepFlow's `byte`).
  public var frameBytes: UInt64 = 0
  /// Transport payload bytes of every packet, retransmissions included.
  public var payloadBytes: UInt64 = 0
  /// Payload bytes counted once: TCP retransmitted bytes excluded (Zeek's `orig_bytes`, Arkime's
  /// `client.bytes`); equal to `payloadBytes` for UDP and ICMP.
  public var uniquePayloadBytes: UInt64 = 0
  public var retransmissions: UInt32 = 0
  public var outOfOrder: UInt32 = 0
  public var zeroWindows: UInt32 = 0
  public var fins: UInt32 = 0
  public var rsts: UInt32 = 0
  public var pshs: UInt32 = 0
  /// Packets with ACK set and no SYN (Arkime's `ack` flag count).
  public var acks: UInt32 = 0

  public init() {}
}

/// One record per flow per capture point per report interval: the contract between the flow stage
/// and everything after it. Field meanings are documented in docs/records.md.
public struct FlowLog: Sendable {
  public var startMicros: Int64
  public var endMicros: Int64
  public var l4Protocol: L4Protocol
  public var clientIP: IPAddress
  public var clientPort: UInt16
  public var serverIP: IPAddress
  public var serverPort: UInt16
  /// True when client and server were inferred from ports rather than seen in a handshake.
  public var orientationGuessed: Bool
  /// Capture interface name ("" when the source does not say).
  public var interface: String
  /// Network namespace of a live capture ("" otherwise).
  public var netns: String
  /// Outermost 802.1Q VLAN id, 0 when untagged.
  public var vlan: UInt16
  /// VXLAN/Geneve network identifier of the tunnel the flow was carried in, or nil.
  public var tunnelID: UInt32?
  public var clientToServer: DirectionStats
  public var serverToClient: DirectionStats
  public var closeType: CloseType
  public var status: FlowStatus
  /// Handshake round trips in µs, 0 when not measured.
  public var rttClientMicros: UInt32
  public var rttServerMicros: UInt32
  public var rttMicros: UInt32
  public var srt: LatencyStats
  public var art: LatencyStats
  public var cit: LatencyStats
  public var synCount: UInt32
  public var synAckCount: UInt32
  public var synRetransmissions: UInt32
  public var synAckRetransmissions: UInt32
  /// ICMP destination-unreachable (type, code) that quoted this flow, if any.
  public var icmpUnreachable: (type: UInt8, code: UInt8)?
  /// Sequence number in the record stream of this flow (0 for the first record of a flow).
  public var reportIndex: UInt32
  /// Identifies the flow within its source (unique, never reused).
  public var flowID: UInt64 = 0
  /// Slot the flow occupied in the flow table; lets the next stage free its state. Not written.
  public var flowSlot: Int = -1
  /// Application protocol recognised on the flow (nil: none).
  public var applicationProtocol: ApplicationProtocol?
  /// Requests and responses of the interval, and how the requests ended.
  public var application = ApplicationCounts()

  /// The flow's last record (not a periodic report).
  public var isFinal: Bool { closeType != .forcedReport }

  public init(
    startMicros: Int64, endMicros: Int64, l4Protocol: L4Protocol, clientIP: IPAddress,
    clientPort: UInt16, serverIP: IPAddress, serverPort: UInt16
  ) {
    self.startMicros = startMicros
    self.endMicros = endMicros
    self.l4Protocol = l4Protocol
    self.clientIP = clientIP
    self.clientPort = clientPort
    self.serverIP = serverIP
    self.serverPort = serverPort
    orientationGuessed = false
    interface = ""
    netns = ""
    vlan = 0
    tunnelID = nil
    clientToServer = DirectionStats()
    serverToClient = DirectionStats()
    closeType = .idle
    status = .ok
    rttClientMicros = 0
    rttServerMicros = 0
    rttMicros = 0
    srt = LatencyStats()
    art = LatencyStats()
    cit = LatencyStats()
    synCount = 0
    synAckCount = 0
    synRetransmissions = 0
    synAckRetransmissions = 0
    icmpUnreachable = nil
    reportIndex = 0
  }
}
