import FathomAnalyze
import FathomDiagnosis
import Foundation
import Testing

/// Reading a recording's samples.jsonl: typed samples within the window; lines that are not a
/// sample (cut short, garbage, a kind the runbook does not know, no time) are skipped and counted.
@Suite struct ResourceSampleReadingTests {
  @Test func samplesInTheWindowAreReadAndBadLinesCounted() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("samples-\(UUID().uuidString).jsonl").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let lines = [
      #"{"time":"2026-11-27T10:00:00Z","kind":"pod","namespace":"shop","name":"web-a","restarts":1,"rx_packets":5}"#,
      #"{"time":"2026-11-27T10:00:01Z","kind":"node","name":"node-1","interfaces":{"eth0":{"rx_packets":9,"tx_dropped":2}}}"#,
      #"{"time":"2026-11-27T10:00:02Z","kind":"pod","namespace":"shop","name":"web-a","res"#,
      "not json at all",
      #"{"time":"2026-11-27T10:00:03Z","kind":"container","name":"x"}"#,
      #"{"kind":"pod","namespace":"shop","name":"web-a"}"#,
      #"{"time":"2026-11-27T10:00:09Z","kind":"pod","namespace":"shop","name":"web-a","restarts":2}"#,
      "",
    ]
    try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    let all = RecordingDiagnosis.samples(at: path)
    #expect(all.samples.count == 3 && all.unreadable == 4)
    #expect(all.samples[0].key == "pod/shop/web-a" && all.samples[0].restarts == 1)
    #expect(all.samples[0].interfaces["eth0"]?.rxPackets == 5)
    #expect(all.samples[1].interfaces["eth0"] == InterfaceCounters(rxPackets: 9, txDropped: 2))
    // 10:00:00 to 10:00:05 (µs since the epoch).
    let start = Int64(1_795_773_600) * 1_000_000
    let windowed = RecordingDiagnosis.samples(at: path, window: start...(start + 5_000_000))
    #expect(windowed.samples.map(\.name) == ["web-a", "node-1"])
    #expect(RecordingDiagnosis.samples(at: "/nonexistent/samples.jsonl").samples.isEmpty)
  }
}
