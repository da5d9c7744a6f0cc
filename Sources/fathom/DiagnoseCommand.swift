import ArgumentParser
import FathomAnalyze
import FathomDiagnosis
import FathomKube
import FathomStore
import Foundation

/// `fathom diagnose`: the runbook on a lab recording or a store.
struct DiagnoseCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "diagnose",
    abstract: "Walk the runbook for a Service and name the faulty component with evidence.")
  @Option(help: "NAMESPACE/NAME of the Service whose users complain.") var service: String?
  @Option(help: "HOST/PATH an external user calls: the Ingress rule's backend Service is diagnosed.") var ingress:
    String?
  @Option(help: "NAMESPACE/WORKLOAD of the calling side (with --to).") var from: String?
  @Option(help: "NAMESPACE/NAME of the Service called (with --from).") var to: String?
  @Option(help: "A `fathom lab record` directory (analysed into --db first if needed).") var labRecording: String?
  @Option(help: "SQLite store (default: fathom.sqlite inside the recording).") var db: String?
  @Option(help: "Kubernetes objects at the end of the window (default: the recording's objects.json).") var objects:
    String?
  @Option(help: "Resource samples, JSON lines (default: the recording's samples.jsonl).") var samples: String?
  @Option(help: "Thresholds (JSON) overriding the defaults of docs/runbook.md.") var config: String?
  @Option(help: "text or json.") var format = "text"

  func validate() throws {
    let targets = [service != nil, ingress != nil, to != nil].filter { $0 }.count
    guard targets == 1 else { throw ValidationError("give one of --service, --ingress HOST/PATH, --from W --to S") }
    guard (from == nil) == (to == nil) else { throw ValidationError("--from and --to go together") }
    guard ["text", "json"].contains(format) else { throw ValidationError("--format is text or json") }
  }

  func run() throws {
    do {
      let database = db ?? labRecording.map(RecordingDiagnosis.database(of:)) ?? "fathom.sqlite"
      guard labRecording != nil || FileManager.default.fileExists(atPath: database) else {
        throw ValidationError(
          "no store at \(database): give --lab-recording DIR, or --db FILE written by fathom analyze")
      }
      if let labRecording { try RecordingDiagnosis.analyzeIfNeeded(recording: labRecording, database: database) }
      let objectsPath = objects ?? labRecording.map { "\($0)/objects.json" }
      let samplesPath = samples ?? labRecording.map { "\($0)/samples.jsonl" }
      let objectList = try objectsPath.map { try KubeDecoder.decode(file: $0) } ?? []
      let sampleLines = RecordingDiagnosis.samples(at: samplesPath)
      var target = service ?? to ?? ""
      if let ingress {
        guard let backend = Runbook.ingressBackend(ingress, objects: objectList) else {
          throw ValidationError("no Ingress rule matches \(ingress) in the objects")
        }
        target = backend
      }
      var input = DiagnosisInput(
        store: try SQLiteStore(path: database), objects: objectList, samples: sampleLines, service: target)
      if let config {
        input.thresholds = try JSONDecoder().decode(
          Thresholds.self, from: Data(contentsOf: URL(fileURLWithPath: config)))
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
    } catch {
      FileHandle.standardError.write(Data("fathom diagnose: \(error)\n".utf8))
      throw ExitCode.failure
    }
  }
}
