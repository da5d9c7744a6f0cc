import FathomDiagnosis
import FathomKube
import FathomLab
import FathomStore
import Foundation

/// The runbook's input from a lab recording: the recording analysed into `fathom.sqlite` beside
/// it (once), its objects at the end of the window (from the event log) and its resource samples
/// within the window.
public enum RecordingDiagnosis {
  public static func database(of recording: String) -> String { "\(recording)/fathom.sqlite" }

  public static func analyzeIfNeeded(recording: String, database: String) throws {
    guard !FileManager.default.fileExists(atPath: database) else { return }
    var options = Analyzer.Options()
    options.labRecording = recording
    options.database = database
    _ = try Analyzer(options: options).run { _ in }
  }

  /// Resource samples, one JSON object per line, within `window` (µs) when given; unreadable
  /// lines are skipped.
  public static func samples(at path: String?, window: ClosedRange<Int64>? = nil) -> [[String: Any]] {
    (path.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? "").split(separator: "\n").compactMap {
      guard let sample = (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] else { return nil }
      if let window {
        guard let time = (sample["time"] as? String).flatMap(parseTime),
          window.contains(Int64(time * 1e6))
        else { return nil }
      }
      return sample
    }
  }

  /// The objects as they were at `micros` when the recording has its event log, else at its end.
  public static func objects(recording: String, at micros: Int64?) throws -> [KubeObject] {
    let events = "\(recording)/objects-events.jsonl"
    if let micros, FileManager.default.fileExists(atPath: events) {
      return try KubeDecoder.decode(
        KubeObjects.json(try KubeObjects.list(eventsPath: events, at: Double(micros) / 1e6)), source: events)
    }
    return try KubeDecoder.decode(file: "\(recording)/objects.json")
  }

  public static func input(
    recording: String, service: String, window: ClosedRange<Int64>? = nil, baseline: ClosedRange<Int64>? = nil
  ) throws -> DiagnosisInput {
    let database = database(of: recording)
    try analyzeIfNeeded(recording: recording, database: database)
    return DiagnosisInput(
      store: try SQLiteStore(path: database), objects: try objects(recording: recording, at: window?.upperBound),
      samples: samples(at: "\(recording)/samples.jsonl", window: window), service: service, window: window,
      baseline: baseline)
  }
}
