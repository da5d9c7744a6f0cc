import FathomCapture
import FathomRecords
import FathomWire
import Foundation
import Testing

/// tcpdump's own decodes of its test captures, packet by packet: addresses and ports of the
/// innermost IP header, TCP flags and payload length, and truncation.
///
/// Compared: every packet for which tcpdump prints a transport tuple (`a.p > b.q:`). Not compared:
/// non-first IP fragments (tcpdump prints no ports; Fathom reassembles), ICMP inside a tunnel
/// (tcpdump's last tuple is then the outer UDP one), outputs of `-x`/`-X`
/// hex dumps and of SPECIAL_t timestamp formats, whose lines are not parsed here.
@Suite struct TcpdumpDecodeTests {
  struct Expected {
    var source: String
    var sourcePort: UInt16
    var destination: String
    var destinationPort: UInt16
    var tcpFlags: Set<Character>?
    var tcpLength: Int?
    var truncated: Bool
  }

  /// `a.b.c.d.port > e.f.g.h.port: ` or the IPv6 equivalent; an address without a port (ICMP)
  /// does not match.
  static let tupleRegex = try! NSRegularExpression(
    pattern:
      #"(\d+\.\d+\.\d+\.\d+|[0-9a-fA-F]*:[0-9a-fA-F:]*)\.(\d+) > (\d+\.\d+\.\d+\.\d+|[0-9a-fA-F]*:[0-9a-fA-F:]*)\.(\d+): "#
  )
  static let flagsRegex = try! NSRegularExpression(pattern: #"Flags \[([^\]]*)\]"#)
  static let lengthRegex = try! NSRegularExpression(pattern: #", length (\d+)"#)
  static let packetLineRegex = try! NSRegularExpression(
    pattern: #"^\s*(\d+)  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (.*)$"#)

  /// One joined line per packet number.
  static func packetLines(_ relative: String) -> [Int: String] {
    var result: [Int: String] = [:]
    var current = -1
    for line in TestData.lines(relative).map(String.init) {
      let range = NSRange(line.startIndex..., in: line)
      if let match = packetLineRegex.firstMatch(in: line, range: range),
        let number = Int(line[Range(match.range(at: 1), in: line)!])
      {
        current = number
        result[number] = String(line[Range(match.range(at: 2), in: line)!])
      } else if current >= 0 {
        result[current, default: ""] += " " + line.trimmingCharacters(in: .whitespaces)
      }
    }
    return result
  }

  static func expected(from text: String) -> Expected? {
    let range = NSRange(text.startIndex..., in: text)
    guard let tuple = tupleRegex.matches(in: text, range: range).last else { return nil }
    func group(_ match: NSTextCheckingResult, _ index: Int) -> String {
      String(text[Range(match.range(at: index), in: text)!])
    }
    var expected = Expected(
      source: group(tuple, 1), sourcePort: UInt16(group(tuple, 2)) ?? 0, destination: group(tuple, 3),
      destinationPort: UInt16(group(tuple, 4)) ?? 0, tcpFlags: nil, tcpLength: nil, truncated: text.contains("[|"))
    let rest = String(text[Range(tuple.range, in: text)!.upperBound...])
    let restRange = NSRange(rest.startIndex..., in: rest)
    if rest.hasPrefix("Flags ["), let flags = flagsRegex.firstMatch(in: rest, range: restRange) {
      expected.tcpFlags = Set(String(rest[Range(flags.range(at: 1), in: rest)!]).filter { "FSRP.U".contains($0) })
      if let length = lengthRegex.firstMatch(in: rest, range: restRange) {
        expected.tcpLength = Int(rest[Range(length.range(at: 1), in: rest)!])
      }
    }
    return expected
  }

  static func flagCharacters(_ flags: TCPFlags) -> Set<Character> {
    var result = Set<Character>()
    if flags.contains(.fin) { result.insert("F") }
    if flags.contains(.syn) { result.insert("S") }
    if flags.contains(.rst) { result.insert("R") }
    if flags.contains(.psh) { result.insert("P") }
    if flags.contains(.ack) { result.insert(".") }
    if flags.contains(.urg) { result.insert("U") }
    return result
  }

  /// Decodes every frame of a capture, keeping the results in packet order.
  struct Recorder: PacketSink {
    /// The BPF filter of the tcpdump run: only packets it passes are numbered.
    var filter: PacketFilter?
    var decoder = PacketDecoder()
    var packet = DecodedPacket()
    var results: [(DecodeResult, DecodedPacket)] = []
    mutating func receive(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer, interfaces: [CaptureInterface]) {
      if let filter, !filter.matches(header, bytes) { return }
      let result = decoder.decode(
        bytes, linkType: header.linkType, wireLength: header.wireLength, timestampNanos: header.timestampNanos,
        into: &packet)
      var copy = packet
      copy.payload = UnsafeRawBufferPointer(start: nil, count: 0)
      results.append((result, copy))
    }
  }

  @Test func decodesAgreeWithTcpdump() throws {
    try #require(TestData.available, "../shared/testdata is missing")
    let known = TestData.knownDifferences("tcpdump-decode-differences.tsv")
    var report = OracleReport()
    var seenOutputs = Set<String>()
    for line in TestData.lines("tcpdump/index.tsv").dropFirst() {
      let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
      guard fields.count >= 4 else { continue }
      let args = fields[3]
      if args.contains("-x") || args.contains("-X") || args.contains("SPECIAL_t") { continue }
      guard seenOutputs.insert(fields[2]).inserted else { continue }
      let file = try CaptureFile(path: TestData.path("tcpdump/tests/\(fields[1])"))
      var recorder = Recorder()
      if let separator = args.range(of: "-- ") {
        recorder.filter = try PacketFilter(expression: String(args[separator.upperBound...]))
      }
      file.read(into: &recorder)
      let lines = Self.packetLines("tcpdump/tests/\(fields[2])")
      for (number, text) in lines.sorted(by: { $0.key < $1.key }) {
        guard let expected = Self.expected(from: text), number - 1 < recorder.results.count else { continue }
        let (result, packet) = recorder.results[number - 1]
        let name = "\(fields[2]) #\(number)"
        var problems: [String] = []
        switch result {
        case .fragmentHeld:
          continue
        case .transport where packet.tunnelID != nil && (packet.ipProtocol == 1 || packet.ipProtocol == 58):
          continue  // tunnelled ICMP: tcpdump's last printed tuple is the outer UDP one
        case .transport:
          let source = packet.source.description
          let destination = packet.destination.description
          let tupleMatches =
            (IPAddress(expected.source)?.description ?? expected.source) == source
            && (IPAddress(expected.destination)?.description ?? expected.destination) == destination
          let portsMatch =
            packet.sourcePort == expected.sourcePort && packet.destinationPort == expected.destinationPort
          if !(tupleMatches && portsMatch) {
            problems.append(
              "tuple \(source).\(packet.sourcePort) > \(destination).\(packet.destinationPort) vs \(expected.source).\(expected.sourcePort) > \(expected.destination).\(expected.destinationPort)"
            )
          }
          if let flags = expected.tcpFlags {
            if packet.ipProtocol != 6 {
              problems.append("not TCP")
            } else {
              if Self.flagCharacters(packet.tcpFlags) != flags { problems.append("flags") }
              if let length = expected.tcpLength, length != packet.payloadLength, !expected.truncated {
                problems.append("length \(packet.payloadLength) vs \(length)")
              }
            }
          }
        case .malformed:
          if !expected.truncated { problems.append("malformed: \(result)") }
        default:
          problems.append("not decoded: \(result)")
        }
        report.record(key: name, problems: problems, known: known)
      }
    }
    report.check("tcpdump decodes")
  }
}
