import FathomRecords

/// TCP header flag bits.
public struct TCPFlags: OptionSet, Sendable {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }
  public static let fin = TCPFlags(rawValue: 0x01)
  public static let syn = TCPFlags(rawValue: 0x02)
  public static let rst = TCPFlags(rawValue: 0x04)
  public static let psh = TCPFlags(rawValue: 0x08)
  public static let ack = TCPFlags(rawValue: 0x10)
  public static let urg = TCPFlags(rawValue: 0x20)
}

/// TCP options Fathom uses; absent options keep their "none" value.
public struct TCPOptions: Sendable, Equatable {
  public var mss: UInt16 = 0
  /// Window scale shift, or nil when the option was absent.
  public var windowScale: UInt8? = nil
  public var sackPermitted = false
  /// Number of SACK blocks in this segment.
  public var sackBlocks: UInt8 = 0
  public var timestampValue: UInt32 = 0
  public var timestampEcho: UInt32 = 0
  public var hasTimestamp = false
  public init() {}
}

/// The transport tuple found inside an ICMP error message (the datagram the error is about).
public struct QuotedTuple: Sendable, Equatable {
  public var source: IPAddress = .zero
  public var destination: IPAddress = .zero
  public var ipProtocol: UInt8 = 0
  public var sourcePort: UInt16 = 0
  public var destinationPort: UInt16 = 0
  /// Sequence number of a quoted TCP segment.
  public var tcpSequence: UInt32 = 0
  public init() {}
}

/// One decoded packet: fixed-size fields plus a view of the transport payload.
///
/// The decoder fills one instance per packet in place; `payload` points into the capture buffer
/// (or the reassembly buffer) and is valid only until the next packet is decoded.
public struct DecodedPacket {
  public var timestampNanos: Int64 = 0
  public var ipVersion: UInt8 = 0
  public var source: IPAddress = .zero
  public var destination: IPAddress = .zero
  /// IP protocol of the transport header (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
  public var ipProtocol: UInt8 = 0
  /// IP-level bytes of the packet (corrected for GSO super-frames and Ethernet padding).
  public var l3Length: Int = 0
  public var sourcePort: UInt16 = 0
  public var destinationPort: UInt16 = 0
  public var tcpFlags = TCPFlags()
  public var sequence: UInt32 = 0
  public var acknowledgement: UInt32 = 0
  /// Advertised window before scaling.
  public var window: UInt16 = 0
  public var tcpOptions = TCPOptions()
  /// Transport payload length according to the headers (may exceed what was captured).
  public var payloadLength: Int = 0
  /// The captured part of the transport payload.
  public var payload = UnsafeRawBufferPointer(start: nil, count: 0)
  public var icmpType: UInt8 = 0
  public var icmpCode: UInt8 = 0
  /// Set for ICMP destination-unreachable / time-exceeded / packet-too-big messages.
  public var icmpIsError = false
  public var quoted = QuotedTuple()
  /// Outermost VLAN id (0 when untagged).
  public var vlanID: UInt16 = 0
  /// VNI of the innermost VXLAN/Geneve tunnel, when the packet was decapsulated from one.
  public var tunnelID: UInt32? = nil
  /// Link-layer frames this packet was assembled from (more than 1 for reassembled IP fragments).
  public var frameCount: Int = 1
  /// Wire length of those frames, link headers included.
  public var frameBytes: Int = 0

  public init() {}
}

/// What the decoder made of a frame.
public enum DecodeResult: Sendable, Equatable {
  /// A TCP, UDP or ICMP packet is in the `DecodedPacket`.
  case transport
  /// Valid frame that carries no IP (ARP, LLDP, STP, ...), counted as ignored.
  case notIP
  /// IP with a transport Fathom does not track (ESP, SCTP, OSPF, ...), counted as ignored.
  case otherTransport
  /// A fragment held for reassembly; the datagram arrives with its last fragment.
  case fragmentHeld
  /// The link type is not one Fathom decodes.
  case unsupportedLinkType
  /// The frame is broken; the reason is counted.
  case malformed(MalformedReason)
}

/// Why a frame was judged malformed. Each reason has its own counter.
public enum MalformedReason: Int, Sendable, CaseIterable, CustomStringConvertible {
  case emptyFrame
  case truncatedLinkHeader
  case truncatedIPHeader
  case badIPVersion
  case badIPHeaderLength
  case ipLengthShorterThanHeader
  case badIPv6ExtensionHeader
  case truncatedTransportHeader
  case badTCPDataOffset
  case badUDPLength
  case badFragment
  case tooManyEncapsulations
  case truncatedTunnelHeader

  public var description: String {
    switch self {
    case .emptyFrame: "empty frame"
    case .truncatedLinkHeader: "truncated link header"
    case .truncatedIPHeader: "truncated IP header"
    case .badIPVersion: "bad IP version"
    case .badIPHeaderLength: "bad IP header length"
    case .ipLengthShorterThanHeader: "IP length shorter than its header"
    case .badIPv6ExtensionHeader: "bad IPv6 extension header"
    case .truncatedTransportHeader: "truncated TCP/UDP/ICMP header"
    case .badTCPDataOffset: "bad TCP data offset"
    case .badUDPLength: "bad UDP length"
    case .badFragment: "bad IP fragment"
    case .tooManyEncapsulations: "too many nested encapsulations"
    case .truncatedTunnelHeader: "truncated tunnel header"
    }
  }
}

/// Counters of everything the decoder did not turn into a transport packet.
public struct WireCounters: Sendable, Equatable {
  public var frames: UInt64 = 0
  public var transportPackets: UInt64 = 0
  public var notIP: UInt64 = 0
  public var otherTransport: UInt64 = 0
  public var unsupportedLinkType: UInt64 = 0
  public var malformed = [UInt64](repeating: 0, count: MalformedReason.allCases.count)
  /// IP length field 0 (BIG TCP / GSO super-frames, jumbograms): the frame's length was used.
  public var lengthFromFrame: UInt64 = 0
  /// IP length field beyond the frame (snap-length cut without a record saying so, or a lying
  /// field): the header's length was used for accounting, the captured bytes for parsing.
  public var lengthBeyondFrame: UInt64 = 0
  public var fragments: UInt64 = 0
  public var datagramsReassembled: UInt64 = 0
  /// Fragments dropped because their datagram never completed in time or the table was full.
  public var fragmentsDropped: UInt64 = 0
  public var decapsulated: UInt64 = 0

  public init() {}

  public var malformedTotal: UInt64 { malformed.reduce(0, +) }
}
