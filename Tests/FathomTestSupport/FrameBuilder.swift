import FathomRecords
import Foundation

/// Builds real frames byte by byte for unit tests: Ethernet, VLAN, IPv4/IPv6, TCP/UDP/ICMP.
public struct FrameBuilder {
  public var source = IPAddress("10.0.0.1")!
  public var destination = IPAddress("10.0.0.2")!
  public var vlan: UInt16?

  public init(source: String = "10.0.0.1", destination: String = "10.0.0.2", vlan: UInt16? = nil) {
    self.source = IPAddress(source)!
    self.destination = IPAddress(destination)!
    self.vlan = vlan
  }

  public static let syn: UInt8 = 0x02
  public static let ack: UInt8 = 0x10
  public static let fin: UInt8 = 0x01
  public static let rst: UInt8 = 0x04
  public static let psh: UInt8 = 0x08

  /// Ethernet + IP + TCP. `options` are raw TCP option bytes (padded to 4).
  public func tcp(
    sourcePort: UInt16, destinationPort: UInt16, seq: UInt32, ack: UInt32 = 0, flags: UInt8, window: UInt16 = 65_535,
    payload: [UInt8] = [], options: [UInt8] = []
  ) -> [UInt8] {
    var padded = options
    while padded.count % 4 != 0 { padded.append(1) }
    var segment: [UInt8] = []
    segment += be16(sourcePort) + be16(destinationPort) + be32(seq) + be32(ack)
    segment += [UInt8((20 + padded.count) / 4) << 4, flags] + be16(window) + [0, 0, 0, 0]
    segment += padded + payload
    return ethernet(ip(protocol: 6, segment))
  }

  public func udp(sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
    ethernet(ip(protocol: 17, udpSegment(sourcePort: sourcePort, destinationPort: destinationPort, payload: payload)))
  }

  public func udpSegment(sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
    be16(sourcePort) + be16(destinationPort) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
  }

  public func icmp(type: UInt8, code: UInt8, body: [UInt8]) -> [UInt8] {
    ethernet(ip(protocol: source.isIPv4 ? 1 : 58, [type, code, 0, 0] + body))
  }

  /// An IP packet (v4 or v6 by the addresses) around a transport segment.
  public func ip(protocol proto: UInt8, _ segment: [UInt8], identification: UInt16 = 1, fragmentField: UInt16 = 0)
    -> [UInt8]
  {
    if source.isIPv4 {
      var header: [UInt8] = [0x45, 0] + be16(UInt16(20 + segment.count)) + be16(identification) + be16(fragmentField)
      header += [64, proto, 0, 0] + be32(source.ipv4Value) + be32(destination.ipv4Value)
      return header + segment
    }
    var header: [UInt8] = [0x60, 0, 0, 0] + be16(UInt16(segment.count)) + [proto, 64]
    header += be64(source.high) + be64(source.low) + be64(destination.high) + be64(destination.low)
    return header + segment
  }

  public func ethernet(_ packet: [UInt8]) -> [UInt8] {
    var frame: [UInt8] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]
    if let vlan { frame += [0x81, 0x00] + be16(vlan) }
    frame += (packet.first.map { $0 >> 4 == 6 } ?? false) ? [0x86, 0xDD] : [0x08, 0x00]
    return frame + packet
  }

  public func reversed() -> FrameBuilder {
    var copy = self
    copy.source = destination
    copy.destination = source
    return copy
  }
}

public func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
public func be32(_ value: UInt32) -> [UInt8] { be16(UInt16(value >> 16)) + be16(UInt16(value & 0xFFFF)) }
public func be64(_ value: UInt64) -> [UInt8] { be32(UInt32(value >> 32)) + be32(UInt32(value & 0xFFFF_FFFF)) }
public func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }
public func le32(_ value: UInt32) -> [UInt8] { le16(UInt16(value & 0xFFFF)) + le16(UInt16(value >> 16)) }

/// A frame with its capture time, for building capture files.
public struct TimedFrame {
  public var micros: Int64
  public var bytes: [UInt8]
  public var wireLength: Int?
  public var interface: UInt32 = 0
  public init(micros: Int64, bytes: [UInt8], wireLength: Int? = nil, interface: UInt32 = 0) {
    self.micros = micros
    self.bytes = bytes
    self.wireLength = wireLength
    self.interface = interface
  }
}

/// Writes classic pcap and pcapng files for tests.
public enum CaptureFileBuilder {
  public static func pcap(_ frames: [TimedFrame], linkType: UInt32 = 1, nanos: Bool = false) -> [UInt8] {
    var bytes =
      le32(nanos ? 0xA1B2_3C4D : 0xA1B2_C3D4) + le16(2) + le16(4) + le32(0) + le32(0) + le32(262_144)
      + le32(linkType)
    for frame in frames {
      let seconds = UInt32(frame.micros / 1_000_000)
      let fraction = UInt32(frame.micros % 1_000_000) * (nanos ? 1000 : 1)
      bytes += le32(seconds) + le32(fraction) + le32(UInt32(frame.bytes.count))
      bytes += le32(UInt32(frame.wireLength ?? frame.bytes.count)) + frame.bytes
    }
    return bytes
  }

  /// pcapng with one interface per (name, link type, tsresol exponent of 10).
  public static func pcapng(_ frames: [TimedFrame], interfaces: [(String, UInt16, UInt8)]) -> [UInt8] {
    var bytes = block(0x0A0D_0D0A, le32(0x1A2B_3C4D) + le16(1) + le16(0) + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF))
    for (name, linkType, resolution) in interfaces {
      var options = option(2, Array(name.utf8)) + option(9, [resolution])
      options += le16(0) + le16(0)
      bytes += block(1, le16(linkType) + le16(0) + le32(262_144) + options)
    }
    for frame in frames {
      let resolution = interfaces[Int(frame.interface)].2
      var units = UInt64(frame.micros)
      if resolution > 6 { for _ in 6..<Int(resolution) { units *= 10 } }
      var body = le32(frame.interface) + le32(UInt32(units >> 32)) + le32(UInt32(units & 0xFFFF_FFFF))
      body += le32(UInt32(frame.bytes.count)) + le32(UInt32(frame.wireLength ?? frame.bytes.count)) + frame.bytes
      while body.count % 4 != 0 { body.append(0) }
      bytes += block(6, body)
    }
    return bytes
  }

  static func option(_ code: UInt16, _ value: [UInt8]) -> [UInt8] {
    var result = le16(code) + le16(UInt16(value.count)) + value
    while result.count % 4 != 0 { result.append(0) }
    return result
  }

  static func block(_ type: UInt32, _ body: [UInt8]) -> [UInt8] {
    let length = UInt32(12 + body.count)
    return le32(type) + le32(length) + body + le32(length)
  }

  /// Writes bytes to a fresh temporary file and returns its path.
  public static func temporaryFile(_ bytes: [UInt8], suffix: String = ".pcap") throws -> String {
    let path = NSTemporaryDirectory() + "fathom-test-\(UUID().uuidString)\(suffix)"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
  }
}
