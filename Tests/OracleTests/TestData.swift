import FathomPipeline
import FathomRecords
import Foundation
import Testing

/// Locates ../shared/testdata (beside the checkout) and reads the oracles in it.
enum TestData {
  static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
  static let root = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/testdata")

  static var available: Bool { FileManager.default.fileExists(atPath: root.path) }

  static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

  static func lines(_ relative: String) -> [Substring] {
    guard let text = try? String(contentsOfFile: path(relative), encoding: .utf8) else { return [] }
    return text.split(separator: "\n", omittingEmptySubsequences: true)
  }

  /// Known differences: `key<TAB>reason` lines of a fixture file beside the tests.
  static func knownDifferences(_ name: String) -> [String: String] {
    let url = packageRoot.appendingPathComponent("Tests/OracleTests/Fixtures/\(name)")
    guard let text = try? String(contentsOf: url, encoding: .utf8) else { return [:] }
    var result: [String: String] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
      let parts = line.split(separator: "\t", maxSplits: 1)
      if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
    }
    return result
  }

  /// Options for comparing with tools that report one record per connection.
  static var wholeFlowOptions: FlowPipelineOptions {
    var options = FlowPipelineOptions()
    options.flowConfig.reportIntervalSeconds = nil
    return options
  }
}

/// One endpoint of a flow, direction-free.
struct Endpoint: Hashable, Comparable, CustomStringConvertible {
  var ip: String
  var port: UInt16
  static func < (a: Endpoint, b: Endpoint) -> Bool { (a.ip, a.port) < (b.ip, b.port) }
  var description: String { "\(ip):\(port)" }
}

/// A flow's figures regrouped by endpoint, summed over all records of the same 5-tuple.
struct EndpointTotals {
  var packets: [Endpoint: UInt64] = [:]
  var l3Bytes: [Endpoint: UInt64] = [:]
  var frameBytes: [Endpoint: UInt64] = [:]
  var payload: [Endpoint: UInt64] = [:]
  var records: [FlowLog] = []
}

struct TupleKey: Hashable, CustomStringConvertible {
  var low: Endpoint
  var high: Endpoint
  var proto: String
  init(_ a: Endpoint, _ b: Endpoint, _ proto: String) {
    low = min(a, b)
    high = max(a, b)
    self.proto = proto
  }
  var description: String { "\(proto) \(low)-\(high)" }
}

extension Array where Element == FlowLog {
  /// Groups records by 5-tuple and sums each endpoint's sent figures.
  func totalsByTuple() -> [TupleKey: EndpointTotals] {
    var result: [TupleKey: EndpointTotals] = [:]
    for flow in self {
      let client = Endpoint(ip: flow.clientIP.description, port: flow.clientPort)
      let server = Endpoint(ip: flow.serverIP.description, port: flow.serverPort)
      let key = TupleKey(client, server, flow.l4Protocol.description)
      var totals = result[key] ?? EndpointTotals()
      totals.packets[client, default: 0] += flow.clientToServer.packets
      totals.packets[server, default: 0] += flow.serverToClient.packets
      totals.l3Bytes[client, default: 0] += flow.clientToServer.l3Bytes
      totals.l3Bytes[server, default: 0] += flow.serverToClient.l3Bytes
      totals.frameBytes[client, default: 0] += flow.clientToServer.frameBytes
      totals.frameBytes[server, default: 0] += flow.serverToClient.frameBytes
      totals.payload[client, default: 0] += flow.clientToServer.payloadBytes
      totals.payload[server, default: 0] += flow.serverToClient.payloadBytes
      totals.records.append(flow)
      result[key] = totals
    }
    return result
  }
}

/// Compares agreement with a list of known differences and returns what a test should complain of.
struct OracleReport {
  var compared = 0
  var agreed = 0
  var unexplained: [String] = []
  var fixedButListed: [String] = []

  var ratio: Double { compared == 0 ? 1 : Double(agreed) / Double(compared) }

  func check(_ oracle: String, target: Double = 0.95, sourceLocation: SourceLocation = #_sourceLocation) {
    checkAgreement(
      oracle, agreed: agreed, compared: compared, unexplained: unexplained, fixedButListed: fixedButListed,
      target: target, sourceLocation: sourceLocation)
  }

  mutating func record(key: String, problems: [String], known: [String: String]) {
    compared += 1
    if problems.isEmpty {
      agreed += 1
      if known[key] != nil { fixedButListed.append(key) }
    } else if known[key] == nil {
      unexplained.append("\(key)\t\(problems.joined(separator: "; "))")
    }
  }
}

/// Rows of a Zeek log baseline (ASCII TSV with #fields, or zeek-cut output with a plain header).
enum ZeekLog {
  static func rows(_ relative: String) -> [[String: String]] {
    var fields: [String] = []
    var result: [[String: String]] = []
    for line in TestData.lines(relative) {
      if line.hasPrefix("#fields") {
        fields = line.split(separator: "\t").dropFirst().map(String.init)
        continue
      }
      if line.hasPrefix("#") { continue }
      if fields.isEmpty {
        fields = line.split(separator: "\t").map(String.init)
        continue
      }
      let values = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
      var row: [String: String] = [:]
      for (name, value) in zip(fields, values) { row[name] = value }
      result.append(row)
    }
    return result
  }

  /// (baseline file, traces) for every Zeek test whose baselines include a file named `log`.
  static func cases(log: String) -> [(baseline: String, traces: [String])] {
    var byTest: [String: [String]] = [:]
    var order: [String] = []
    for line in TestData.lines("zeek/index.tsv").dropFirst() {
      let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
      guard fields.count >= 4, fields[3].split(separator: ",").contains(Substring(log)) else { continue }
      var test = fields[1]
      if let dot = test.lastIndex(of: ".") { test = String(test[..<dot]) }
      let baseline = test.replacingOccurrences(of: "/", with: ".") + "/" + log
      if byTest[baseline] == nil { order.append(baseline) }
      if !(byTest[baseline] ?? []).contains(fields[0]) { byTest[baseline, default: []].append(fields[0]) }
    }
    return order.map { ($0, byTest[$0]!) }
  }
}

/// Compares two multisets of keys per source: agreement is the matched count over the larger side.
struct MultisetReport {
  var matched = 0
  var total = 0
  var unexplained: [String] = []
  var fixedButListed: [String] = []

  mutating func compare(source: String, ours: [String], theirs: [String], known: [String: String]) {
    var remaining: [String: Int] = [:]
    for key in theirs { remaining[key, default: 0] += 1 }
    var matchedHere = 0
    var extra: [String] = []
    for key in ours {
      if let count = remaining[key], count > 0 {
        remaining[key] = count - 1
        matchedHere += 1
      } else {
        extra.append(key)
      }
    }
    let missing = remaining.flatMap { key, count in Array(repeating: key, count: count) }
    matched += matchedHere
    total += max(ours.count, theirs.count)
    let agrees = extra.isEmpty && missing.isEmpty
    if agrees {
      if known[source] != nil { fixedButListed.append(source) }
    } else if known[source] == nil {
      unexplained.append(
        "\(source)\tours-only \(extra.prefix(5)) (\(extra.count)); theirs-only \(missing.prefix(5)) (\(missing.count))")
    }
  }

  var ratio: Double { total == 0 ? 1 : Double(matched) / Double(total) }

  func check(_ oracle: String, target: Double = 0.98, sourceLocation: SourceLocation = #_sourceLocation) {
    checkAgreement(
      oracle, agreed: matched, compared: total, unexplained: unexplained, fixedButListed: fixedButListed,
      target: target, sourceLocation: sourceLocation)
  }
}

/// Prints an oracle's agreement and fails on unexplained differences, on listed differences that
/// are gone (the list may only shrink), and below the target.
func checkAgreement(
  _ oracle: String, agreed: Int, compared: Int, unexplained: [String], fixedButListed: [String], target: Double,
  sourceLocation: SourceLocation
) {
  let ratio = compared == 0 ? 1 : Double(agreed) / Double(compared)
  print("\(oracle): \(agreed)/\(compared) agree (\(Int(ratio * 1000)) per mille)")
  #expect(
    unexplained.isEmpty, "unexplained differences:\n\(unexplained.joined(separator: "\n"))",
    sourceLocation: sourceLocation)
  #expect(
    fixedButListed.isEmpty, "listed as different but now agree: \(fixedButListed)", sourceLocation: sourceLocation)
  #expect(ratio >= target, sourceLocation: sourceLocation)
}
