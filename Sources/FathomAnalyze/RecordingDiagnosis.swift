import FathomDiagnosis
import FathomKube
import FathomStore
import Foundation

/// The runbook's input from a lab recording: the recording analysed into `fathom.sqlite` beside
/// it (once), its objects at the end and its resource samples.
public enum RecordingDiagnosis {
  public static func database(of recording: String) -> String { "\(recording)/fathom.sqlite" }

  public static func analyzeIfNeeded(recording: String, database: String) throws {
    guard !FileManager.default.fileExists(atPath: database) else { return }
    var options = Analyzer.Options()
    options.labRecording = recording
    options.database = database
    _ = try Analyzer(options: options).run { _ in }
  }

  /// Resource samples, one JSON object per line; unreadable lines are skipped.
  public static func samples(at path: String?) -> [[String: Any]] {
    (path.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? "").split(separator: "\n").compactMap {
      (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
    }
  }

  public static func input(recording: String, service: String) throws -> DiagnosisInput {
    let database = database(of: recording)
    try analyzeIfNeeded(recording: recording, database: database)
    return DiagnosisInput(
      store: try SQLiteStore(path: database), objects: try KubeDecoder.decode(file: "\(recording)/objects.json"),
      samples: samples(at: "\(recording)/samples.jsonl"), service: service)
  }
}
