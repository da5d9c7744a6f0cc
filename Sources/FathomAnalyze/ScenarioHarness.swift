import FathomDiagnosis
import FathomKube
import FathomLab
import FathomStore
import Foundation
import Yams

/// A fault scenario with its expected diagnosis, written before the run (scenarios/*.yaml).
public struct Scenario: Codable, Sendable {
  public struct Expectation: Codable, Sendable {
    public var step: String
    /// The verdict's component must start with this.
    public var component: String
    public var kind: String?
  }
  public var name: String
  /// A fault of the lab's catalog, or `none` for a healthy run.
  public var fault: String
  public var target: String?
  /// The Service users complain about; or `ingress` (HOST/PATH): the matching rule's backend.
  public var service: String?
  public var ingress: String?
  /// The access path the load takes (a load target's `path` of the topology); absent: all.
  public var path: String?
  /// Requests per second per sender and target; absent: the topology's. A fault that only
  /// shows under load (CPU throttling) states the load it needs.
  public var rate: Double?
  /// Absent: a healthy run (no finding, no failed step).
  public var expect: Expectation?

  public static func load(directory: String) throws -> [Scenario] {
    let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".yaml") }.sorted()
    return try files.map { file in
      let text = try String(contentsOfFile: "\(directory)/\(file)", encoding: .utf8)
      do {
        return try YAMLDecoder().decode(Scenario.self, from: text)
      } catch {
        throw LabError.topology("\(file): \(error)")
      }
    }
  }
}

/// Runs scenarios on the lab: fault, recording under load, diagnosis, comparison with the
/// expectation, heal. The score is computed from the scenario files only.
public struct ScenarioHarness {
  public struct Outcome: Sendable {
    public var scenario: String
    public var expected: String
    public var got: String
    /// 1-based rank of the first finding matching the expectation (0: not found); healthy runs:
    /// 1 when clean, 0 otherwise.
    public var rank: Int
    public var seconds: Double
  }

  let store: LabStore
  let workDirectory: String
  /// The diagnosed window: this long under the fault, after it had `settleSeconds` to show
  /// (past the demo services' resolver cache and the first retries).
  public var recordSeconds: Double = 8
  /// The healthy baseline recorded before the fault.
  public var baselineSeconds: Double = 5
  public var settleSeconds: Double = 3

  public init(store: LabStore, workDirectory: String) {
    self.store = store
    self.workDirectory = workDirectory
  }

  /// One continuous recording under load: the healthy baseline, the fault applied, the settle
  /// time, the window. The diagnosis gets the window and the baseline as an operator states them
  /// ("fine until the fault, failing for the last N seconds"); the harness knows them by
  /// construction, not from the diagnosis.
  public func run(_ scenario: Scenario, progress: (String) -> Void) throws -> Outcome {
    let injector = FaultInjector(store: store)
    _ = try injector.heal(nil)
    try waitUntilReady(seconds: 30)
    let directory = "\(workDirectory)/\(scenario.name)"
    try? FileManager.default.removeItem(atPath: directory)
    let total = baselineSeconds + settleSeconds + recordSeconds
    progress(
      "\(scenario.name): recording \(Int(total)) s on \(scenario.path ?? "every path") (baseline \(Int(baselineSeconds)) s, then \(scenario.fault))"
    )
    let fault = scenario.fault
    let target = scenario.target
    let apply = LabRecorder.TimedAction(after: baselineSeconds) { [store] in
      if fault != "none" { _ = try FaultInjector(store: store).apply(fault, target: target) }
    }
    defer { if fault != "none" { _ = try? injector.heal(fault) } }
    try LabRecorder(store: store).record(
      duration: total, output: directory, runLoad: true, rate: scenario.rate, paths: scenario.path.map { [$0] },
      during: apply
    ) { _ in }
    if fault != "none" { _ = try injector.heal(fault) }

    // The recording's manifest has its time range and when the fault was applied.
    let manifest =
      (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(directory)/manifest.json"))))
      as? [String: Any] ?? [:]
    guard let started = (manifest["start"] as? String).flatMap(parseTime),
      let ended = (manifest["end"] as? String).flatMap(parseTime)
    else { throw LabError.state("\(directory): the recording's manifest has no time range") }
    let applied = ((manifest["faults"] as? [[String: Any]])?.first?["applied_at"] as? String).flatMap(parseTime)
    let faultMicros = Int64((applied ?? started + baselineSeconds) * 1e6)
    let baseline = Int64((started + 0.5) * 1e6)...(faultMicros - 1)
    let windowStart = faultMicros + Int64(settleSeconds * 1e6)
    let clock = Date()
    var input = try RecordingDiagnosis.input(
      recording: directory, service: scenario.service ?? "", window: windowStart...Int64(ended * 1e6),
      baseline: baseline)
    if let ingress = scenario.ingress {
      guard let backend = Runbook.ingressBackend(ingress, objects: input.objects) else {
        throw LabError.topology("\(scenario.name): no Ingress rule matches \(ingress)")
      }
      input.service = backend
    }
    let diagnosis = try Runbook(input: input).diagnose()
    let seconds = Date().timeIntervalSince(clock)
    try diagnosis.text.write(toFile: "\(directory)/diagnosis.txt", atomically: true, encoding: .utf8)

    let top = diagnosis.verdict.first.map { "\($0.component) (\($0.kind))" } ?? "no finding"
    guard let expect = scenario.expect else {
      let clean = diagnosis.verdict.isEmpty && !diagnosis.steps.contains { $0.status == .failed }
      return Outcome(scenario: scenario.name, expected: "healthy", got: top, rank: clean ? 1 : 0, seconds: seconds)
    }
    let rank =
      diagnosis.verdict.firstIndex { finding in
        finding.component.hasPrefix(expect.component) && finding.step == expect.step
          && (expect.kind == nil || finding.kind == expect.kind)
      }.map { $0 + 1 } ?? 0
    return Outcome(
      scenario: scenario.name, expected: "\(expect.component) (\(expect.kind ?? expect.step))", got: top, rank: rank,
      seconds: seconds)
  }

  func waitUntilReady(seconds: Double) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
      let state = try store.load()
      if state.pods.values.allSatisfy({ $0.ready || $0.stopped }) && state.nodes.values.allSatisfy(\.ready) { return }
      Thread.sleep(forTimeInterval: 0.25)
    }
    throw LabError.state("the lab did not become ready within \(Int(seconds)) s")
  }

  public static func table(_ outcomes: [Outcome]) -> String {
    func pad(_ text: String, _ width: Int) -> String {
      text.count >= width
        ? String(text.prefix(width - 1)) + " " : text.padding(toLength: width, withPad: " ", startingAt: 0)
    }
    var text = pad("scenario", 40) + pad("expected", 44) + pad("top verdict", 56) + "rank  time\n"
    for outcome in outcomes {
      text += pad(outcome.scenario, 40) + pad(outcome.expected, 44) + pad(outcome.got, 56)
      text += pad(outcome.rank == 0 ? "-" : String(outcome.rank), 6) + String(format: "%.2f s\n", outcome.seconds)
    }
    let first = outcomes.filter { $0.rank == 1 }.count
    let top2 = outcomes.filter { (1...2).contains($0.rank) }.count
    text += "right first: \(first)/\(outcomes.count); in the top 2: \(top2)/\(outcomes.count)\n"
    return text
  }
}
