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
  public var recordSeconds: Double = 8

  public init(store: LabStore, workDirectory: String) {
    self.store = store
    self.workDirectory = workDirectory
  }

  public func run(_ scenario: Scenario, progress: (String) -> Void) throws -> Outcome {
    let injector = FaultInjector(store: store)
    _ = try injector.heal(nil)
    try waitUntilReady(seconds: 30)
    if scenario.fault != "none" {
      _ = try injector.apply(scenario.fault, target: scenario.target)
      // Past the demo services' resolver cache and the first retries.
      Thread.sleep(forTimeInterval: 3)
    }
    let directory = "\(workDirectory)/\(scenario.name)"
    try? FileManager.default.removeItem(atPath: directory)
    progress("\(scenario.name): recording \(Int(recordSeconds)) s")
    try LabRecorder(store: store).record(duration: recordSeconds, output: directory, runLoad: true, rate: nil) { _ in }
    if scenario.fault != "none" { _ = try injector.heal(scenario.fault) }

    let started = Date()
    var input = try RecordingDiagnosis.input(recording: directory, service: scenario.service ?? "")
    if let ingress = scenario.ingress {
      guard let backend = Runbook.ingressBackend(ingress, objects: input.objects) else {
        throw LabError.topology("\(scenario.name): no Ingress rule matches \(ingress)")
      }
      input.service = backend
    }
    let diagnosis = try Runbook(input: input).diagnose()
    let seconds = Date().timeIntervalSince(started)
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
