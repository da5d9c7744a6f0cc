import FathomPipeline
import FathomRecords
import Foundation
import Testing

/// Arkime's HTTP and DNS fields per session (expected_sessions.tsv): the sets of HTTP methods,
/// status codes and hosts, and of DNS names, query types and statuses, against Fathom's requests
/// on the same 5-tuple. Arkime lists a Host both with and without its port; hosts are compared
/// without ports, names case-insensitively. Arkime's host column also carries TLS SNI and QUIC
/// names: sessions with a host but no HTTP method or status are not HTTP and are skipped. Arkime's
/// DNS names include the names in answers: Fathom's question names must be among them.
@Suite struct ArkimeApplicationTests {
  static let rcodeNames: [Int32: String] = [
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMPL", 5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET",
    8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADSIG_VERS",
  ]

  static func set(_ field: Substring) -> Set<String> {
    Set(field.split(separator: "|").map { String($0) }.filter { !$0.isEmpty })
  }

  static func withoutPort(_ host: String) -> String {
    guard let colon = host.lastIndex(of: ":"), !host.hasPrefix("[") else { return host.lowercased() }
    return String(host[..<colon]).lowercased()
  }

  @Test func httpAndDNSFieldsAgree() throws {
    try #require(TestData.available)
    let known = TestData.knownDifferences("arkime-application-differences.tsv")
    var report = OracleReport()
    var cache: [String: [RequestLog]] = [:]
    // Arkime splits a 5-tuple into several sessions over time; their fields are united per tuple.
    struct Expected {
      var pcap: String
      var source: Endpoint
      var destination: Endpoint
      var http: [Set<String>]?
      var dns: [Set<String>]?
    }
    var order: [String] = []
    var expected: [String: Expected] = [:]
    for line in TestData.lines("arkime/expected_sessions.tsv").dropFirst() {
      let f = line.split(separator: "\t", omittingEmptySubsequences: false)
      guard f.count >= 16 else { continue }
      let httpParts = f[14].split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
      let isHTTP = httpParts.count == 3 && !(httpParts[0].isEmpty && httpParts[1].isEmpty)
      let dnsParts = f[15].split(separator: "/", omittingEmptySubsequences: false)
      let isDNS = dnsParts.count >= 3
      guard isHTTP || isDNS else { continue }
      let source = ArkimeSessionTests.endpoint(String(f[3]), proto: Int(f[2]) ?? 0)
      let destination = ArkimeSessionTests.endpoint(String(f[4]), proto: Int(f[2]) ?? 0)
      let key = "\(f[0]) \(min(source, destination))-\(max(source, destination))"
      var entry = expected[key] ?? Expected(pcap: String(f[0]), source: source, destination: destination)
      if isHTTP {
        let sets = [Self.set(httpParts[0]), Self.set(httpParts[1]), Set(Self.set(httpParts[2]).map(Self.withoutPort))]
        entry.http = zip(entry.http ?? [[], [], []], sets).map { $0.union($1) }
      }
      if isDNS {
        let sets = [Set(Self.set(dnsParts[0]).map { $0.lowercased() }), Self.set(dnsParts[1]), Self.set(dnsParts[2])]
        entry.dns = zip(entry.dns ?? [[], [], []], sets).map { $0.union($1) }
      }
      if expected[key] == nil { order.append(key) }
      expected[key] = entry
    }
    for key in order {
      let entry = expected[key]!
      if cache[entry.pcap] == nil {
        cache[entry.pcap] =
          (try? FlowPipeline.requests(
            file: TestData.path("arkime/tests/pcap/\(entry.pcap).pcap"), options: TestData.wholeFlowOptions
          ).0) ?? []
      }
      let ours = cache[entry.pcap]!.filter {
        let ends = Set([
          Endpoint(ip: $0.clientIP.description, port: $0.clientPort),
          Endpoint(ip: $0.serverIP.description, port: $0.serverPort),
        ])
        return ends == Set([entry.source, entry.destination])
      }
      var problems: [String] = []
      if let their = entry.http {
        let http = ours.filter { $0.applicationProtocol == .http || $0.applicationProtocol == .http2 }
        let methods = Set(http.map(\.method).filter { !$0.isEmpty })
        let codes = Set(http.compactMap { $0.code.map { String($0) } })
        let hosts = Set(http.map { Self.withoutPort($0.domain) }.filter { !$0.isEmpty })
        if their[0] != methods { problems.append("methods \(methods.sorted()) vs \(their[0].sorted())") }
        if their[1] != codes { problems.append("codes \(codes.sorted()) vs \(their[1].sorted())") }
        if their[2] != hosts && !their[2].isEmpty { problems.append("hosts \(hosts.sorted()) vs \(their[2].sorted())") }
      }
      if let their = entry.dns {
        let dns = ours.filter { $0.applicationProtocol == .dns }
        let names = Set(dns.map { $0.domain.lowercased() }.filter { !$0.isEmpty })
        let types = Set(dns.map(\.method))
        let statuses = Set(
          dns.compactMap {
            $0.status == .timeout || $0.status == .unknown ? nil : $0.code.flatMap { Self.rcodeNames[$0] }
          })
        if !names.isSubset(of: their[0]) || names.isEmpty != their[0].isEmpty {
          problems.append("names \(names.sorted()) vs \(their[0].sorted())")
        }
        if their[1] != types { problems.append("types \(types.sorted()) vs \(their[1].sorted())") }
        if their[2] != statuses { problems.append("statuses \(statuses.sorted()) vs \(their[2].sorted())") }
      }
      report.record(key: key, problems: problems, known: known)
    }
    // Below the 98% goal because of SOCKS, SCTP, IDN and Arkime-specific naming, each listed.
    report.check("Arkime HTTP/DNS fields", target: 0.85)
  }
}
