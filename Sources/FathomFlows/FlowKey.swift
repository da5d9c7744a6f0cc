import FathomRecords

/// Direction-independent flow identity: the endpoint that sorts lower is side A. Includes the
/// capture point so the same connection seen at two interfaces stays two flows.
public struct FlowKey: Equatable, Sendable {
  public var addressA: IPAddress
  public var addressB: IPAddress
  public var portA: UInt16
  public var portB: UInt16
  public var ipProtocol: UInt8
  public var vlan: UInt16
  /// VXLAN/Geneve VNI + 1, 0 when not tunnelled (so VNI 0 stays distinct from no tunnel).
  public var tunnel: UInt32
  public var capturePoint: UInt32

  @inlinable
  public init(
    addressA: IPAddress, addressB: IPAddress, portA: UInt16, portB: UInt16, ipProtocol: UInt8, vlan: UInt16,
    tunnel: UInt32, capturePoint: UInt32
  ) {
    self.addressA = addressA
    self.addressB = addressB
    self.portA = portA
    self.portB = portB
    self.ipProtocol = ipProtocol
    self.vlan = vlan
    self.tunnel = tunnel
    self.capturePoint = capturePoint
  }

  /// Builds the key and tells whether the packet's sender is side A.
  @inlinable
  public static func make(
    source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16, ipProtocol: UInt8,
    vlan: UInt16, tunnel: UInt32?, capturePoint: UInt32
  ) -> (FlowKey, senderIsA: Bool) {
    let senderIsA = source < destination || (source == destination && sourcePort <= destinationPort)
    let key = FlowKey(
      addressA: senderIsA ? source : destination, addressB: senderIsA ? destination : source,
      portA: senderIsA ? sourcePort : destinationPort, portB: senderIsA ? destinationPort : sourcePort,
      ipProtocol: ipProtocol, vlan: vlan, tunnel: tunnel.map { $0 &+ 1 } ?? 0, capturePoint: capturePoint)
    return (key, senderIsA)
  }

  /// A cheap 64-bit mix (multiply–xorshift); Hasher's SipHash is needlessly slow per packet.
  @inlinable
  public var hashValue64: UInt64 {
    var h = addressA.low &* 0x9E37_79B9_7F4A_7C15
    h ^= addressB.low &* 0xC2B2_AE3D_27D4_EB4F
    h ^= (addressA.high ^ (addressB.high &* 0x1656_67B1_9E37_79F9))
    h ^= UInt64(portA) << 48 | UInt64(portB) << 32 | UInt64(ipProtocol) << 24 | UInt64(vlan) << 8
    h ^= UInt64(tunnel) << 32 | UInt64(capturePoint)
    h ^= h >> 29
    h = h &* 0xBF58_476D_1CE4_E5B9
    h ^= h >> 32
    return h
  }
}
