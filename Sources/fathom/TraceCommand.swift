import ArgumentParser
import FathomStore
import FathomTracing
import Foundation

/// `fathom trace`: one request as the network saw it, hop by hop.
struct TraceCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "trace", abstract: "Assemble one request's path across observation points, proxies and services.")
  @Option(help: "X-Request-ID of the request.") var xRequestId: String?
  @Option(help: "W3C trace id of the request.") var traceId: String?
  @Option(help: "Row id of one stored request (`fathom traces` lists them).") var request: Int64?
  @Option(help: "SQLite store.") var db = "fathom.sqlite"
  @Option(help: "Read from ClickHouse at this HTTP URL instead.") var clickhouse: String?
  @Option(help: "ClickHouse database.") var clickhouseDatabase = "fathom"
  @OptionGroup var clickhouseTLS: ClickHouseTLSOptions
  @Option(help: "text or json.") var format = "text"

  func validate() throws {
    guard [xRequestId != nil, traceId != nil, request != nil].filter({ $0 }).count == 1 else {
      throw ValidationError("give one of --x-request-id, --trace-id, --request")
    }
    guard ["text", "json"].contains(format) else { throw ValidationError("--format is text or json") }
  }

  func run() throws {
    let source: TraceSource
    if let clickhouse {
      var target = ClickHouseStore.Target(url: clickhouse)
      target.database = clickhouseDatabase
      try clickhouseTLS.apply(to: &target)
      source = try ClickHouseStore(target)
    } else {
      guard FileManager.default.fileExists(atPath: db) else {
        FileHandle.standardError.write(Data("fathom trace: no store at \(db) (fathom analyze writes one)\n".utf8))
        throw ExitCode.failure
      }
      source = try SQLiteStore(path: db)
    }
    let assembler = TraceAssembler(source: source)
    let trace: Trace?
    if let xRequestId {
      trace = try assembler.assemble(xRequestID: xRequestId)
    } else if let traceId {
      trace = try assembler.assemble(traceID: traceId)
    } else {
      trace = try assembler.assemble(requestID: request!)
    }
    guard let trace else {
      FileHandle.standardError.write(Data("fathom trace: no request with that id in \(db)\n".utf8))
      throw ExitCode.failure
    }
    if format == "json" {
      let data = try JSONSerialization.data(
        withJSONObject: trace.jsonObject, options: [.sortedKeys, .withoutEscapingSlashes])
      print(String(decoding: data, as: UTF8.self))
    } else {
      print(trace.waterfall(), terminator: "")
    }
  }
}

/// `fathom traces`: candidate requests to trace for a Service.
struct TracesCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "traces", abstract: "List requests to a Service (at its pods) worth tracing.")
  @Option(help: "NAMESPACE/NAME of the Service.") var service: String
  @Option(help: "error or slow (slower than --slow-ms).") var status: String?
  @Option(help: "What counts as slow, in ms.") var slowMs: Double = 500
  @Option(help: "Only the last DURATION of the store (e.g. 5m, 1h), counted back from its newest request.")
  var since: String?
  @Option(help: "SQLite store.") var db = "fathom.sqlite"
  @Option(help: "At most this many.") var limit = 20

  func run() throws {
    guard FileManager.default.fileExists(atPath: db) else {
      FileHandle.standardError.write(Data("fathom traces: no store at \(db) (fathom analyze writes one)\n".utf8))
      throw ExitCode.failure
    }
    let store = try SQLiteStore(path: db)
    var from = Int64.min
    if let since {
      let seconds = try parseDuration(since, option: "--since")
      let newest = Int64(try store.query("SELECT MAX(start_us) FROM requests").rows.first?.first ?? "0") ?? 0
      from = newest - Int64(seconds * 1_000_000)
    }
    let rows = try store.candidates(
      service: service, onlyErrors: status == "error", slowerThanMicros: status == "slow" ? Int64(slowMs * 1000) : nil,
      since: from, limit: limit)
    print(
      "row        start_us           duration_ms  status        code  pod                                      x-request-id"
    )
    for row in rows {
      print(
        String(format: "%-10lld %-18lld %11.2f  ", row.id, row.startMicros, Double(row.durationMicros) / 1000)
          + row.status.padding(toLength: 13, withPad: " ", startingAt: 0) + " "
          + (row.code.map(String.init) ?? "-").padding(toLength: 5, withPad: " ", startingAt: 0) + " "
          + row.serverPod.padding(toLength: 40, withPad: " ", startingAt: 0) + " " + row.xRequestID)
    }
  }
}
