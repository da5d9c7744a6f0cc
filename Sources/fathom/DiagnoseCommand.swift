import ArgumentParser
import FathomAnalyze
import FathomDiagnosis
import FathomKube
import FathomStore
import Foundation

/// `fathom diagnose`: the runbook on a lab recording, a SQLite store or ClickHouse.
struct DiagnoseCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "diagnose",
    abstract: "Walk the runbook for a Service and name the faulty component with evidence.",
    discussion: """
      The window is the whole store unless --since (counted back from the newest record, as
      captures are read after the fact) or --start/--end narrow it. The baseline is the period of
      --baseline just before the window (default: as long as the window; 0s: none).
      """)
  @Option(help: "NAMESPACE/NAME of the Service whose users complain.") var service: String?
  @Option(help: "HOST/PATH an external user calls: the Ingress rule's backend Service is diagnosed.") var ingress:
    String?
  @Option(help: "NAMESPACE/WORKLOAD of the calling side (with --to): its own lookups and connections only.")
  var from: String?
  @Option(help: "NAMESPACE/NAME of the Service called (with --from).") var to: String?
  @Option(help: "A `fathom lab record` directory (analysed into --db first if needed).") var labRecording: String?
  @Option(help: "SQLite store (default: fathom.sqlite inside the recording).") var db: String?
  @Option(help: "Read from ClickHouse at this HTTP URL instead of SQLite.") var clickhouse: String?
  @Option(help: "ClickHouse database.") var clickhouseDatabase = "fathom"
  @OptionGroup var clickhouseTLS: ClickHouseTLSOptions
  @Option(help: "Kubernetes objects (default: the recording's, at the window's end).") var objects: String?
  @Option(help: "Resource samples, JSON lines (default: the recording's samples.jsonl).") var samples: String?
  @Option(help: "Diagnose the last DURATION (30s, 5m, 1h) of what is stored.") var since: String?
  @Option(help: "Window start (RFC 3339 or epoch seconds).") var start: String?
  @Option(help: "Window end (RFC 3339 or epoch seconds).") var end: String?
  @Option(help: "Baseline length before the window (default: the window's length; 0s: none).") var baseline: String?
  @Option(help: "Thresholds (JSON) overriding the defaults of docs/runbook.md.") var config: String?
  @Option(help: "text or json.") var format = "text"

  func validate() throws {
    let targets = [service != nil, ingress != nil, to != nil].filter { $0 }.count
    guard targets == 1 else { throw ValidationError("give one of --service, --ingress HOST/PATH, --from W --to S") }
    guard (from == nil) == (to == nil) else { throw ValidationError("--from and --to go together") }
    guard since == nil || (start == nil && end == nil) else { throw ValidationError("--since or --start/--end") }
    guard ["text", "json"].contains(format) else { throw ValidationError("--format is text or json") }
    guard clickhouse == nil || (db == nil && labRecording == nil) else {
      throw ValidationError("--clickhouse replaces --db and --lab-recording")
    }
  }

  func run() throws {
    do {
      let store: any DiagnosisSource
      if let clickhouse {
        var target = ClickHouseStore.Target(url: clickhouse)
        target.database = clickhouseDatabase
        try clickhouseTLS.apply(to: &target)
        store = try ClickHouseStore(target)
      } else {
        let database = db ?? labRecording.map(RecordingDiagnosis.database(of:)) ?? "fathom.sqlite"
        guard labRecording != nil || FileManager.default.fileExists(atPath: database) else {
          throw ValidationError(
            "no store at \(database): give --lab-recording DIR, --db FILE written by fathom analyze, or --clickhouse URL"
          )
        }
        if let labRecording { try RecordingDiagnosis.analyzeIfNeeded(recording: labRecording, database: database) }
        store = try SQLiteStore(path: database)
      }
      let (window, baselineWindow) = try windows(store)
      let objectList: [KubeObject]
      if let objects {
        objectList = try KubeDecoder.decode(file: objects)
      } else if let labRecording {
        objectList = try RecordingDiagnosis.objects(recording: labRecording, at: window?.upperBound)
      } else {
        objectList = []
      }
      let samplesPath = samples ?? labRecording.map { "\($0)/samples.jsonl" }
      var target = service ?? to ?? ""
      if let ingress {
        guard let backend = Runbook.ingressBackend(ingress, objects: objectList) else {
          throw ValidationError("no Ingress rule matches \(ingress) in the objects")
        }
        target = backend
      }
      let samplesRead = RecordingDiagnosis.samples(at: samplesPath, window: window)
      if samplesRead.unreadable > 0 {
        FileHandle.standardError.write(
          Data("fathom diagnose: \(samplesRead.unreadable) unreadable lines of \(samplesPath ?? "") skipped\n".utf8))
      }
      var input = DiagnosisInput(
        store: store, objects: objectList, samples: samplesRead.samples,
        service: target, window: window, baseline: baselineWindow)
      input.from = from
      if let config {
        input.thresholds = try Thresholds.overriding(json: Data(contentsOf: URL(fileURLWithPath: config)))
      }
      let diagnosis = try Runbook(input: input).diagnose()
      if format == "json" {
        let data = try JSONSerialization.data(
          withJSONObject: diagnosis.jsonObject, options: [.sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
      } else {
        print(diagnosis.text, terminator: "")
      }
    } catch let error as ExitCode {
      throw error
    } catch let error as ValidationError {
      FileHandle.standardError.write(Data("fathom diagnose: \(error.message)\n".utf8))
      throw ExitCode.failure
    } catch {
      FileHandle.standardError.write(Data("fathom diagnose: \(error)\n".utf8))
      throw ExitCode.failure
    }
  }

  /// The window from --since or --start/--end, and the baseline before it.
  func windows(_ store: any DiagnosisSource) throws -> (ClosedRange<Int64>?, ClosedRange<Int64>?) {
    let baselineSeconds = try baseline.map { try parseDuration($0, option: "--baseline") }
    if let since {
      return try DiagnosisInput.window(
        lastSeconds: try parseDuration(since, option: "--since"), baselineSeconds: baselineSeconds, in: store)
    }
    guard start != nil || end != nil, let recorded = try store.recordedRange() else { return (nil, nil) }
    let from = try start.map { try parseInstant($0, option: "--start") } ?? recorded.lowerBound
    let to = try end.map { try parseInstant($0, option: "--end") } ?? recorded.upperBound
    guard from <= to else { throw ValidationError("--start is after --end") }
    let length = Double(to - from) / 1e6
    return (from...to, DiagnosisInput.baseline(before: from, seconds: baselineSeconds ?? length, in: recorded))
  }
}
