import FathomPipeline
import FathomRecords
import Foundation
import Testing

/// Zeek's conn.log baselines: per-side packets and IP bytes, and the connection state.
@Suite struct ZeekConnTests {
  struct ZeekConn {
    var orig: Endpoint
    var resp: Endpoint
    var proto: String
    var state: String
    /// Absent from zeek-cut projections that left them out.
    var origPackets: UInt64?
    var origIPBytes: UInt64?
    var respPackets: UInt64?
    var respIPBytes: UInt64?
  }

  /// (baseline directory, traces) for every Zeek test with a conn.log baseline.
  static func cases() -> [(baseline: String, traces: [String])] {
    var byTest: [String: [String]] = [:]
    var order: [String] = []
    for line in TestData.lines("zeek/index.tsv").dropFirst() {
      let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
      guard fields.count >= 4 else { continue }
      let connLogs = fields[3].split(separator: ",").map(String.init).filter { $0.hasPrefix("conn.log") }
      var test = fields[1]
      if let dot = test.lastIndex(of: ".") { test = String(test[..<dot]) }
      for log in connLogs {
        // conn.log.ctu and the like belong to the one trace whose name carries the suffix.
        let suffix = log.dropFirst("conn.log".count).drop(while: { $0 == "." })
        if !suffix.isEmpty && suffix != "cut" && !fields[0].contains(suffix) { continue }
        let baseline = test.replacingOccurrences(of: "/", with: ".") + "/" + log
        if byTest[baseline] == nil { order.append(baseline) }
        if !(byTest[baseline] ?? []).contains(fields[0]) { byTest[baseline, default: []].append(fields[0]) }
      }
    }
    return order.map { ($0, byTest[$0]!) }
  }

  static func parseConnLog(_ relative: String) -> [ZeekConn] {
    ZeekLog.rows(relative).compactMap { row in
      guard let origPort = UInt16(row["id.orig_p"] ?? ""), let respPort = UInt16(row["id.resp_p"] ?? "") else {
        return nil
      }
      return ZeekConn(
        orig: Endpoint(ip: normalise(row["id.orig_h"]!), port: origPort),
        resp: Endpoint(ip: normalise(row["id.resp_h"]!), port: respPort), proto: row["proto"] ?? "tcp",
        state: row["conn_state"] ?? "", origPackets: row["orig_pkts"].flatMap { UInt64($0) },
        origIPBytes: row["orig_ip_bytes"].flatMap { UInt64($0) },
        respPackets: row["resp_pkts"].flatMap { UInt64($0) },
        respIPBytes: row["resp_ip_bytes"].flatMap { UInt64($0) })
    }
  }

  static func normalise(_ ip: String) -> String { IPAddress(ip)?.description ?? ip }

  /// Close types consistent with a Zeek conn_state; nil means Zeek's state does not constrain ours.
  static func compatibleCloseTypes(_ state: String) -> Set<CloseType>? {
    switch state {
    case "SF": [.finish, .clientRst, .serverRst]
    case "S0": [.clientSynRepeat, .inProgress, .clientSourcePortReuse]
    case "REJ": [.serverReset]
    case "RSTO": [.clientRst, .clientEstablishReset]
    case "RSTOS0": [.clientEstablishReset, .clientRst]
    case "RSTR": [.serverRst, .serverEstablishReset, .serverReset]
    case "RSTRH": [.serverEstablishReset, .serverReset, .serverRst]
    case "S1": [.inProgress, .timeout]
    case "S2": [.clientHalfClose, .inProgress]
    case "S3": [.serverHalfClose, .inProgress]
    case "SH": [.clientHalfClose, .inProgress, .finish]
    case "SHR": [.serverHalfClose, .inProgress, .finish]
    default: nil
    }
  }

  @Test func connLogsAgree() throws {
    try #require(TestData.available, "../shared/testdata is missing")
    let known = TestData.knownDifferences("zeek-conn-differences.tsv")
    var report = OracleReport()
    for (baseline, traces) in Self.cases() {
      let expected = Self.parseConnLog("zeek/testing/btest/Baseline/\(baseline)")
      guard !expected.isEmpty else { continue }
      var flows: [FlowLog] = []
      for trace in traces {
        let (records, _) = try FlowPipeline.flows(
          file: TestData.path("zeek/testing/btest/Traces/\(trace)"), options: TestData.wholeFlowOptions)
        flows += records
      }
      let ours = flows.totalsByTuple()
      for conn in expected {
        let key = TupleKey(conn.orig, conn.resp, conn.proto)
        let name = "\(baseline) \(key)"
        var problems: [String] = []
        if let totals = ours[key] {
          let packets = (totals.packets[conn.orig] ?? 0, totals.packets[conn.resp] ?? 0)
          let bytes = (totals.l3Bytes[conn.orig] ?? 0, totals.l3Bytes[conn.resp] ?? 0)
          if let origPackets = conn.origPackets, let respPackets = conn.respPackets,
            packets != (origPackets, respPackets)
          {
            problems.append("packets \(packets) vs zeek \((origPackets, respPackets))")
          }
          if let origBytes = conn.origIPBytes, let respBytes = conn.respIPBytes, bytes != (origBytes, respBytes) {
            problems.append("ip bytes \(bytes) vs zeek \((origBytes, respBytes))")
          }
          if conn.proto == "tcp", let allowed = Self.compatibleCloseTypes(conn.state),
            let last = totals.records.last, !allowed.contains(last.closeType)
          {
            problems.append("state \(conn.state) vs \(last.closeType.rawValue)")
          }
        } else {
          problems.append("flow missing")
        }
        report.record(key: name, problems: problems, known: known)
      }
    }
    report.check("Zeek conn.log")
  }
}
