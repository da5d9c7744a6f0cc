import ArgumentParser
import FathomAnalyze
import FathomStore
import Foundation

/// `fathom analyze`: captures + Kubernetes objects → tagged flows and requests in SQLite → summary.
struct AnalyzeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "analyze",
    abstract: "Tag captures with their Kubernetes context, store them, and summarise services, DNS and failures.")

  @Argument(help: "Capture files (a file named after a node, e.g. node-1.pcap, was taken on that node).")
  var captures: [String] = []
  @Option(help: "Kubernetes objects (kubectl get -o json|yaml, a List, API list responses).") var cluster: String?
  @Option(help: "Objects' event log over time (`fathom kube watch --out`, a lab's objects-events.jsonl).")
  var clusterEvents: String?
  @Option(help: "A `fathom lab record` directory (captures, objects event log, interfaces).") var labRecording: String?
  @Option(help: "SQLite file to store into (created or migrated).") var db = "fathom.sqlite"
  @Option(
    help:
      "Store into ClickHouse at this HTTP URL instead (e.g. http://127.0.0.1:8123; user:password@ or CLICKHOUSE_USER/CLICKHOUSE_PASSWORD to log in)."
  ) var clickhouse: String?
  @Option(help: "ClickHouse database.") var clickhouseDatabase = "fathom"
  @OptionGroup var clickhouseTLS: ClickHouseTLSOptions
  @Option(help: "ClickHouse cluster (remote_servers name): local tables on every shard behind Distributed tables.")
  var clickhouseCluster: String?
  @Option(help: "HTTP URL of each shard of --clickhouse-cluster (repeat).") var clickhouseShard: [String] = []
  @Option(help: "table or json.") var format = "table"

  func validate() throws {
    guard [cluster, clusterEvents, labRecording].compactMap({ $0 }).count <= 1 else {
      throw ValidationError("use one of --cluster, --cluster-events, --lab-recording")
    }
    guard !captures.isEmpty || labRecording != nil else {
      throw ValidationError("give capture files or --lab-recording")
    }
    guard ["table", "json"].contains(format) else { throw ValidationError("--format is table or json") }
    guard clickhouseCluster == nil || !clickhouseShard.isEmpty else {
      throw ValidationError("--clickhouse-cluster needs every shard's URL (--clickhouse-shard)")
    }
  }

  func run() throws {
    var options = Analyzer.Options()
    options.captures = captures
    options.clusterFile = cluster
    options.clusterEvents = clusterEvents
    options.labRecording = labRecording
    options.database = db
    if let clickhouse {
      var target = ClickHouseStore.Target(url: clickhouse)
      target.database = clickhouseDatabase
      try clickhouseTLS.apply(to: &target)
      target.cluster = clickhouseCluster
      target.shards = clickhouseShard
      options.clickhouse = target
    }
    let progress = ProgressLine(enabled: isatty(2) != 0)
    // Captures are read in parallel and stored as they are read: one line with each one's share
    // and the records stored so far.
    var reading: [(name: String, fraction: Double)] = []
    var stored = 0
    let result: Analyzer.Result
    do {
      result = try Analyzer(options: options).run { step in
        switch step {
        case .reading(let path, let node, let fraction):
          let name = "\(URL(fileURLWithPath: path).lastPathComponent) (node \(node ?? "unknown"))"
          if let index = reading.firstIndex(where: { $0.name == name }) {
            reading[index].fraction = fraction
          } else {
            reading.append((name, fraction))
          }
        case .stored(let records):
          stored = records
        }
        progress.show(
          "reading "
            + reading.map { String(format: "%@ %.0f%%", $0.name, $0.fraction * 100) }.joined(separator: ", ")
            + "; \(stored) records stored",
          done: false)
      }
    } catch {
      progress.finish()
      FileHandle.standardError.write(Data("fathom analyze: \(error)\n".utf8))
      throw ExitCode.failure
    }
    progress.finish()
    for note in result.notes { FileHandle.standardError.write(Data("\(note)\n".utf8)) }
    if format == "json" {
      let data = try JSONSerialization.data(
        withJSONObject: result.summary.jsonObject, options: [.sortedKeys, .withoutEscapingSlashes])
      print(String(decoding: data, as: UTF8.self))
    } else {
      print(Self.table(result.summary), terminator: "")
      print(
        options.clickhouse.map { "stored in ClickHouse \($0.url), database \(clickhouseDatabase)" }
          ?? "stored in \(db); `fathom query --db \(db) 'SELECT ...'` for more")
    }
  }

  static func table(_ summary: AnalysisSummary) -> String {
    func pad(_ text: String, _ width: Int) -> String {
      text.count >= width
        ? String(text.prefix(width - 1)) + " " : text.padding(toLength: width, withPad: " ", startingAt: 0)
    }
    var text = "\(summary.flows) flows, \(summary.requests) requests\n\n"
    text += "SERVICES (measured at the server pods, observation point s)\n"
    text +=
      pad("service", 42) + pad("requests", 10) + pad("5xx", 7) + pad("4xx", 7) + pad("timeout", 9) + pad("p50 ms", 9)
      + "p99 ms\n"
    for row in summary.services {
      text += pad("\(row.namespace)/\(row.name)", 42) + pad(String(row.requests), 10) + pad(String(row.serverErrors), 7)
      text += pad(String(row.clientErrors), 7) + pad(String(row.timeouts), 9)
      text +=
        pad(String(format: "%.1f", Double(row.p50Micros) / 1000), 9)
        + String(format: "%.1f", Double(row.p99Micros) / 1000) + "\n"
    }
    text += "\nDNS (at the clients' interfaces)\n"
    text += pad("name", 52) + pad("type", 6) + pad("requests", 10) + pad("rcodes", 28) + "answers\n"
    for row in summary.dns.prefix(30) {
      let rcodes = row.rcodes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
      text += pad(row.name, 52) + pad(row.qtype, 6) + pad(String(row.requests), 10)
      text +=
        pad(rcodes + (row.timeouts > 0 ? ", timeout \(row.timeouts)" : ""), 28)
        + row.answers.prefix(3).joined(separator: " ") + "\n"
    }
    text += "\nCONNECTION FAILURES\n"
    if summary.connectionFailures.isEmpty { text += "none\n" }
    for row in summary.connectionFailures.prefix(30) {
      text += pad(row.kind, 26) + pad(row.server, 44) + String(row.count) + "\n"
    }
    return text
  }
}

/// `fathom query`: a read-only SQL query on a store, for power users.
struct QueryCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "query",
    abstract: "Run a read-only SQL query on a Fathom SQLite store (tables: flows, requests, resources).")
  @Option(help: "SQLite file.") var db = "fathom.sqlite"
  @Argument(help: "SQL.") var sql: String

  func run() throws {
    guard FileManager.default.fileExists(atPath: db) else {
      FileHandle.standardError.write(Data("fathom query: no store at \(db)\n".utf8))
      throw ExitCode.failure
    }
    do {
      let result = try SQLiteStore(path: db).query(sql)
      print(result.columns.joined(separator: "\t"))
      for row in result.rows { print(row.joined(separator: "\t")) }
    } catch {
      FileHandle.standardError.write(Data("fathom query: \(error)\n".utf8))
      throw ExitCode.failure
    }
  }
}

/// `fathom store-bench`: ingest rate and RED query time of a store (make bench).
struct StoreBenchCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "store-bench", abstract: "Measure a store's ingest rate and RED query time on synthetic records.",
    shouldDisplay: false)
  @Option(help: "Records to write (one hour of traffic).") var records = 1_000_000
  @Option(help: "SQLite file (removed first).") var db = "/tmp/fathom-store-bench.sqlite"
  @Option(help: "ClickHouse HTTP URL instead of SQLite.") var clickhouse: String?
  @Flag(
    help: """
      Leave the ClickHouse bench database in place (make bench removes its whole server \
      afterwards): on ext4 without a journal, files freed in the last minutes slow down creating \
      new ones, so a drop would slow the next run.
      """)
  var keepDatabase = false

  func run() throws {
    let store: RecordStore
    if let clickhouse {
      var target = ClickHouseStore.Target(url: clickhouse)
      target.database = "fathom_bench_\(getpid())"
      store = try ClickHouseStore(target)
    } else {
      for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: db + suffix) }
      store = try SQLiteStore(path: db)
    }
    let result = try StoreBenchmark.run(store: store, records: records) {
      FileHandle.standardError.write(Data("\($0)\n".utf8))
    }
    let size = Int((try? (store as? SQLiteStore)?.databaseBytes()) ?? 0)
    print(
      String(
        format:
          "%@: %d records in %.2f s = %.0f records/s (client CPU %.2f s); RED of one service over the hour: %.1f ms (%d requests, p99 %.1f ms)%@",
        clickhouse == nil ? "sqlite" : "clickhouse", result.records, result.ingestSeconds, result.recordsPerSecond,
        result.ingestCPUSeconds,
        result.redMillis, result.red?.requests ?? 0, Double(result.red?.p99Micros ?? 0) / 1000,
        (size > 0 ? String(format: "; %.0f bytes/record on disk", Double(size) / Double(result.records)) : "")
          + (result.traceMillis.map { String(format: "; one trace assembled in %.1f ms", $0) } ?? "")))
    if let clickhouse, let store = store as? ClickHouseStore, !keepDatabase {
      _ = try? store.execute("DROP DATABASE IF EXISTS fathom_bench_\(getpid())", on: clickhouse)
    }
  }
}

/// One status line on a terminal, rewritten in place at most four times a second; a step's last
/// state stays on its own line.
final class ProgressLine {
  let enabled: Bool
  private var lastShown = Date.distantPast
  private var open = false

  init(enabled: Bool) { self.enabled = enabled }

  func show(_ text: String, done: Bool) {
    guard enabled, done || Date().timeIntervalSince(lastShown) >= 0.25 else { return }
    lastShown = Date()
    FileHandle.standardError.write(Data("\r\u{1B}[K\(text)\(done ? "\n" : "")".utf8))
    open = !done
  }

  func finish() {
    if enabled && open { FileHandle.standardError.write(Data("\n".utf8)) }
    open = false
  }
}
