import FathomPipeline
import FathomRecords
import Foundation
import Testing

/// Arkime's expected sessions: per-side packets, frame bytes and payload bytes, TCP flag counts,
/// zero-window counts and the initial RTT.
///
/// Definitional differences, settled once here:
/// - Arkime's bytes are whole captured frames; Fathom's `frame_bytes` are frames as on the wire,
///   equal unless the snap length cut a frame.
/// - Arkime keeps one ICMP session per address pair with the whole ICMP message as payload;
///   Fathom keys ICMP flows by type like Zeek and counts payload after the 8-byte header, so for
///   ICMP only packets and bytes per address pair are compared.
/// - Arkime's `ack` count is not compared: it counts its own notion of acknowledgements.
/// - Protocols Fathom does not turn into flows (ESP, SCTP, GRE without a decodable payload, ...)
///   are not compared.
@Suite struct ArkimeSessionTests {
  struct Session {
    var pcap: String
    var proto: Int
    var source: Endpoint
    var destination: Endpoint
    var sourcePackets: UInt64
    var sourceBytes: UInt64
    var destinationPackets: UInt64
    var destinationBytes: UInt64
    var clientPayload: UInt64
    var serverPayload: UInt64
    /// syn, syn-ack, ack, psh, fin, rst, srcZero, dstZero
    var flags: [UInt64]
    var initialRTTMillis: Int?
  }

  static func endpoint(_ text: String, proto: Int) -> Endpoint {
    if proto == 1 || proto == 58 {
      // ICMP rows carry "ip:0" for both families (IPv6 without brackets).
      let ip = text.lastIndex(of: ":").map { String(text[..<$0]) } ?? text
      return Endpoint(ip: IPAddress(ip)?.description ?? ip, port: 0)
    }
    guard let colon = text.lastIndex(of: ":") else { return Endpoint(ip: text, port: 0) }
    var ip = String(text[..<colon])
    if ip.hasPrefix("[") { ip = String(ip.dropFirst().dropLast()) }
    return Endpoint(ip: IPAddress(ip)?.description ?? ip, port: UInt16(text[text.index(after: colon)...]) ?? 0)
  }

  static func sessions() -> [Session] {
    TestData.lines("arkime/expected_sessions.tsv").dropFirst().compactMap { line in
      let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
      guard f.count >= 14, let proto = Int(f[2]), [1, 6, 17, 58].contains(proto) else { return nil }
      return Session(
        pcap: f[0], proto: proto, source: endpoint(f[3], proto: proto), destination: endpoint(f[4], proto: proto),
        sourcePackets: UInt64(f[6]) ?? 0, sourceBytes: UInt64(f[7]) ?? 0, destinationPackets: UInt64(f[8]) ?? 0,
        destinationBytes: UInt64(f[9]) ?? 0, clientPayload: UInt64(f[10]) ?? 0, serverPayload: UInt64(f[11]) ?? 0,
        flags: f[12].split(separator: ",").compactMap { UInt64($0) }, initialRTTMillis: Int(f[13]))
    }
  }

  /// Arkime splits long sessions and UDP sessions by time; both sides are compared per 5-tuple
  /// (per address pair for ICMP), summed.
  static func aggregated(_ sessions: [Session]) -> [Session] {
    var order: [String] = []
    var merged: [String: Session] = [:]
    for session in sessions {
      let key =
        "\(session.pcap) \(session.proto) \(SessionKey(session.source, session.destination, icmp: session.proto == 1 || session.proto == 58, proto: session.proto))"
      guard var existing = merged[key] else {
        order.append(key)
        merged[key] = session
        continue
      }
      let sameDirection = existing.source == session.source
      existing.sourcePackets += sameDirection ? session.sourcePackets : session.destinationPackets
      existing.destinationPackets += sameDirection ? session.destinationPackets : session.sourcePackets
      existing.sourceBytes += sameDirection ? session.sourceBytes : session.destinationBytes
      existing.destinationBytes += sameDirection ? session.destinationBytes : session.sourceBytes
      existing.clientPayload += sameDirection ? session.clientPayload : session.serverPayload
      existing.serverPayload += sameDirection ? session.serverPayload : session.clientPayload
      if existing.flags.count == 8 && session.flags.count == 8 {
        var flags = zip(existing.flags, session.flags).map { $0 + $1 }
        if !sameDirection {
          flags[6] = existing.flags[6] + session.flags[7]
          flags[7] = existing.flags[7] + session.flags[6]
        }
        existing.flags = flags
      }
      merged[key] = existing
    }
    return order.map { merged[$0]! }
  }

  struct Totals {
    var packets: [Endpoint: UInt64] = [:]
    var frameBytes: [Endpoint: UInt64] = [:]
    var payload: [Endpoint: UInt64] = [:]
    var zeroWindows: [Endpoint: UInt64] = [:]
    var syn: UInt64 = 0
    var synAck: UInt64 = 0
    var psh: UInt64 = 0
    var fin: UInt64 = 0
    var rst: UInt64 = 0
    var rttMicros: UInt32 = 0
  }

  struct SessionKey: Hashable, CustomStringConvertible {
    var a: Endpoint
    var b: Endpoint
    var icmp: Bool
    var proto: Int
    init(_ x: Endpoint, _ y: Endpoint, icmp: Bool, proto: Int) {
      a = min(x, y)
      b = max(x, y)
      self.icmp = icmp
      self.proto = proto
    }
    var description: String { "\(a)-\(b)" }
  }

  static func totals(_ flows: [FlowLog]) -> [SessionKey: Totals] {
    var result: [SessionKey: Totals] = [:]
    for flow in flows {
      let icmp = flow.l4Protocol == .icmp || flow.l4Protocol == .icmpv6
      let client = Endpoint(ip: flow.clientIP.description, port: icmp ? 0 : flow.clientPort)
      let server = Endpoint(ip: flow.serverIP.description, port: icmp ? 0 : flow.serverPort)
      let key = SessionKey(client, server, icmp: icmp, proto: Int(flow.l4Protocol.rawValue))
      var t = result[key] ?? Totals()
      for (endpoint, side) in [(client, flow.clientToServer), (server, flow.serverToClient)] {
        t.packets[endpoint, default: 0] += side.packets
        t.frameBytes[endpoint, default: 0] += side.frameBytes
        t.payload[endpoint, default: 0] += side.uniquePayloadBytes
        t.zeroWindows[endpoint, default: 0] += UInt64(side.zeroWindows)
        t.psh += UInt64(side.pshs)
        t.fin += UInt64(side.fins)
        t.rst += UInt64(side.rsts)
      }
      t.syn += UInt64(flow.synCount)
      t.synAck += UInt64(flow.synAckCount)
      if t.rttMicros == 0 { t.rttMicros = flow.rttMicros }
      result[key] = t
    }
    return result
  }

  @Test func sessionsAgree() throws {
    try #require(TestData.available, "../shared/testdata is missing")
    let known = TestData.knownDifferences("arkime-session-differences.tsv")
    var report = OracleReport()
    var cache: [String: [SessionKey: Totals]] = [:]
    for session in Self.aggregated(Self.sessions()) {
      if cache[session.pcap] == nil {
        let path = TestData.path("arkime/tests/pcap/\(session.pcap).pcap")
        let flows = (try? FlowPipeline.flows(file: path, options: TestData.wholeFlowOptions).0) ?? []
        cache[session.pcap] = Self.totals(flows)
      }
      let icmp = session.proto == 1 || session.proto == 58
      let key = SessionKey(session.source, session.destination, icmp: icmp, proto: session.proto)
      let name = "\(session.pcap) \(session.proto) \(session.source)-\(session.destination)"
      var problems: [String] = []
      if let t = cache[session.pcap]![key] {
        let src = session.source
        let dst = session.destination
        let packets = (t.packets[src] ?? 0, t.packets[dst] ?? 0)
        if packets != (session.sourcePackets, session.destinationPackets) {
          problems.append("packets \(packets) vs \((session.sourcePackets, session.destinationPackets))")
        }
        let bytes = (t.frameBytes[src] ?? 0, t.frameBytes[dst] ?? 0)
        if bytes != (session.sourceBytes, session.destinationBytes) {
          problems.append("bytes \(bytes) vs \((session.sourceBytes, session.destinationBytes))")
        }
        if !icmp {
          let payload = (t.payload[src] ?? 0, t.payload[dst] ?? 0)
          if payload != (session.clientPayload, session.serverPayload) {
            problems.append("payload \(payload) vs \((session.clientPayload, session.serverPayload))")
          }
        }
        if session.proto == 6, session.flags.count == 8 {
          let f = session.flags
          let ours = [t.syn, t.synAck, f[2], t.psh, t.fin, t.rst, t.zeroWindows[src] ?? 0, t.zeroWindows[dst] ?? 0]
          if ours != f { problems.append("flags \(ours) vs \(f)") }
          if let expected = session.initialRTTMillis, t.rttMicros > 0 {
            let oursMillis = Int((Double(t.rttMicros) / 2000).rounded())
            if abs(oursMillis - expected) > 1 { problems.append("initRTT \(oursMillis) ms vs \(expected) ms") }
          }
        }
      } else {
        problems.append("session missing")
      }
      report.record(key: name, problems: problems, known: known)
    }
    report.check("Arkime sessions")
  }
}
