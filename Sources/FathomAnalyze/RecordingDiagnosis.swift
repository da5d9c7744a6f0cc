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

  /// Resource samples, one JSON object per line, within `window` (µs) when given, and how many
  /// lines could not be read (cut by a crash of the sampler, or of a newer format): skipped.
  public static func samples(at path: String?, window: ClosedRange<Int64>? = nil) -> (
    samples: [ResourceSample], unreadable: Int
  ) {
    guard let path, let data = FileManager.default.contents(atPath: path) else { return ([], 0) }
    let decoder = JSONDecoder()
    var samples: [ResourceSample] = []
    var unreadable = 0
    for line in data.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
      guard let sample = try? decoder.decode(ResourceSample.self, from: line), let time = parseTime(sample.time)
      else {
        unreadable += 1
        continue
      }
      if let window, !window.contains(Int64(time * 1e6)) { continue }
      samples.append(sample)
    }
    return (samples, unreadable)
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
      samples: samples(at: "\(recording)/samples.jsonl", window: window).samples, service: service, window: window,
      baseline: baseline)
  }
}
