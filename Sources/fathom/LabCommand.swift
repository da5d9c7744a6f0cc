import ArgumentParser
import FathomAnalyze
import FathomLab
import Foundation

/// `fathom lab ...`: the Kubernetes data plane built from network namespaces (docs/lab.md).
struct LabCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lab",
    abstract: "A Kubernetes data plane from network namespaces: kube-proxy rules, DNS, ingress, demo services, faults.",
    subcommands: [
      LabUp.self, LabDown.self, LabStatus.self, LabObjects.self, LabExec.self, LabLoadCommand.self, LabRecord.self,
      LabFault.self, LabHeal.self, LabFaults.self, LabTopology.self, LabScenario.self, LabController.self,
      LabServe.self,
      LabLoadWorker.self, LabDNSDelay.self,
    ])
}

/// Runs a lab step, turning its errors into one clear message and exit status 1.
func labStep<T>(_ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch let error as ExitCode {
    throw error
  } catch {
    FileHandle.standardError.write(Data("fathom lab: \(error)\n".utf8))
    throw ExitCode.failure
  }
}

struct LabUp: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "up", abstract: "Build the lab and start its pods.")
  @Option(help: "Topology YAML (default: the built-in one, `fathom lab topology`).") var topology: String?

  func run() throws {
    try labStep {
      let start = Date()
      let topology = try Topology.load(path: topology)
      let lab = Lab()
      try lab.up(topology) { print($0) }
      print(try lab.status(), terminator: "")
      print(String(format: "lab up in %.1f s", Date().timeIntervalSince(start)))
    }
  }
}

struct LabDown: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "down", abstract: "Remove everything the lab made.")
  func run() throws {
    try labStep {
      guard Shell.isRoot else { throw LabError.missing("the lab needs root") }
      let start = Date()
      let lab = Lab()
      let removed = lab.down()
      let left = lab.leftovers()
      print(removed.isEmpty ? "no lab was running" : "removed: \(removed.joined(separator: ", "))")
      if !left.isEmpty { throw LabError.state("left behind: \(left.joined(separator: ", "))") }
      print(String(format: "lab down in %.1f s", Date().timeIntervalSince(start)))
    }
  }
}

struct LabStatus: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "status", abstract: "Nodes, pods, Services and faults.")
  func run() throws { try labStep { print(try Lab().status(), terminator: "") } }
}

struct LabObjects: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "objects", abstract: "The Kubernetes objects as a kubectl-style List (JSON).")
  @Option(help: "State at this time (RFC 3339 or epoch seconds), replayed from the event log.") var at: String?
  @Option(help: "Read this event log instead of the running lab's (e.g. a recording's).") var events: String?

  func run() throws {
    try labStep {
      var time: Double?
      if let at {
        guard let parsed = parseTime(at) else { throw LabError.command("--at: cannot read \(at)") }
        time = parsed
      }
      let list = try KubeObjects.list(eventsPath: events ?? LabStore().eventsPath, at: time)
      let data = try JSONSerialization.data(
        withJSONObject: list, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
      print(String(decoding: data, as: UTF8.self))
    }
  }
}

struct LabExec: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "exec", abstract: "Run a command in a pod's, a node's or the external client's network namespace.")
  @Argument(help: "pod/NS/NAME (NAME may be a deployment), node/NAME or client") var target: String
  @Argument(parsing: .postTerminator, help: "The command, after --") var command: [String] = []
  func run() throws { try labStep { try Lab().exec(target, command) } }
}

struct LabLoadCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "load", abstract: "Send steady requests on every access path and write the client-side truth.")
  @Option(help: "Requests per second per target and sender (default: the topology's).") var rate: Double?
  @Option(help: "Seconds.") var duration: Double = 10
  @Option(help: "Append the truth records (JSON lines) to this file.") var out = "load-truth.jsonl"

  func run() throws {
    try labStep {
      let summary = try LabLoad(store: LabStore()).run(rate: rate, duration: duration, output: out) {
        print(LabLoad.format($0))
      }
      print(LabLoad.format(summary), terminator: "")
      print("truth: \(out)")
    }
  }
}

struct LabRecord: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "record", abstract: "Capture every node, with load, objects and samples, into a lab recording.")
  @Option(help: "Seconds.") var duration: Double = 30
  @Option(help: "Output directory.") var out: String
  @Flag(help: "Record without running load.") var noLoad = false
  @Option(help: "Load rate (default: the topology's).") var rate: Double?

  func run() throws {
    try labStep {
      try LabRecorder(store: LabStore()).record(duration: duration, output: out, runLoad: !noLoad, rate: rate) {
        print($0, terminator: $0.hasSuffix("\n") ? "" : "\n")
      }
    }
  }
}

struct LabFault: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "fault", abstract: "Apply a fault from the catalog.")
  @Argument(help: "Fault name (`fathom lab faults`).") var name: String
  @Option(help: "Target: a Service or pod/deployment NS/NAME, a node, or an Ingress NS/NAME.") var target: String?
  func run() throws { try labStep { print(try FaultInjector(store: LabStore()).apply(name, target: target)) } }
}

struct LabHeal: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "heal", abstract: "Undo one fault, or all.")
  @Argument(help: "Fault name; all active faults when omitted.") var name: String?
  func run() throws {
    try labStep {
      let healed = try FaultInjector(store: LabStore()).heal(name)
      print(healed.isEmpty ? "no active fault" : "healed: \(healed.joined(separator: ", "))")
    }
  }
}

struct LabFaults: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "faults", abstract: "The fault catalog, with the runbook step and root cause a diagnosis must name.")
  func run() {
    for fault in FaultSpec.catalog {
      print(
        "\(fault.name.padding(toLength: 22, withPad: " ", startingAt: 0)) step \(fault.step.padding(toLength: 15, withPad: " ", startingAt: 0)) target \(fault.defaultTarget)"
      )
      print("    \(fault.summary)")
      print("    root cause: \(fault.rootCause.replacingOccurrences(of: "{target}", with: fault.defaultTarget))")
      print("    symptom:    \(fault.symptom)")
    }
  }
}

struct LabTopology: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "topology", abstract: "Print the default topology (YAML).")
  func run() { print(Topology.defaultYAML) }
}

// Processes the lab starts itself; not for users to call.

struct LabController: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "controller", abstract: "(internal) The lab's control plane and kubelets.", shouldDisplay: false)
  func run() { FathomLab.LabController(store: LabStore()).run() }
}

struct LabServe: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "serve", abstract: "(internal) The demo HTTP service of a lab pod.", shouldDisplay: false)
  @Option var name: String
  @Option var pod: String
  @Option var port: Int
  @Option var call: [String] = []
  @Option var redis: String?
  @Option var control: String?
  func run() throws {
    try labStep {
      try DemoService(
        options: .init(name: name, pod: pod, port: port, calls: call, redis: redis, controlFile: control)
      ).run()
    }
  }
}

struct LabLoadWorker: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "load-worker", abstract: "(internal) One sender of lab load.", shouldDisplay: false)
  @Option var sender: String
  @Option var rate: Double
  @Option var duration: Double
  @Option var out: String
  @Option(help: "PATH=URL") var target: [String] = []
  func run() throws {
    let targets = target.compactMap { entry -> Topology.LoadTarget? in
      guard let equals = entry.firstIndex(of: "=") else { return nil }
      return Topology.LoadTarget(path: String(entry[..<equals]), url: String(entry[entry.index(after: equals)...]))
    }
    LoadWorker(options: .init(sender: sender, targets: targets, rate: rate, duration: duration, output: out)).run()
  }
}

struct LabDNSDelay: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dns-delay", abstract: "(internal) Delaying DNS forwarder for the dns-slow fault.",
    shouldDisplay: false)
  @Option var listen: String
  @Option var upstream: String
  @Option var delayMs: Int
  func run() throws { try labStep { try DNSDelay.run(listen: listen, upstream: upstream, delayMillis: delayMs) } }
}

/// `fathom lab scenario`: the runbook's score on the fault catalog.
struct LabScenario: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "scenario", abstract: "Run fault scenarios and score the diagnoses.",
    subcommands: [LabScenarioRun.self, LabScenarioList.self])
}

struct LabScenarioList: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list", abstract: "The scenarios and their expectations.")
  @Option(help: "Scenario directory.") var dir = "scenarios"
  func run() throws {
    try labStep {
      for scenario in try Scenario.load(directory: dir) {
        let expected = scenario.expect.map { "\($0.step): \($0.component) \($0.kind ?? "")" } ?? "healthy"
        print(
          "\(scenario.name.padding(toLength: 24, withPad: " ", startingAt: 0)) fault \(scenario.fault.padding(toLength: 22, withPad: " ", startingAt: 0)) → \(expected)"
        )
      }
    }
  }
}

struct LabScenarioRun: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run", abstract: "Lab up if needed; per scenario: fault, record under load, diagnose, compare, heal.")
  @Argument(help: "Scenario names (default with --all: every file in --dir).") var names: [String] = []
  @Flag(help: "Run every scenario.") var all = false
  @Option(help: "Scenario directory.") var dir = "scenarios"
  @Option(help: "Where recordings and diagnoses go.") var out = "/tmp/fathom-scenarios"
  @Option(help: "Seconds recorded per scenario.") var seconds: Double = 8
  @Option(help: "table or json.") var format = "table"

  func run() throws {
    try labStep {
      let scenarios = try Scenario.load(directory: dir).filter { all || names.contains($0.name) }
      guard !scenarios.isEmpty else { throw LabError.command("no scenario selected (names, or --all)") }
      let store = LabStore()
      if !store.exists {
        try Lab(store: store).up(try Topology.load(path: nil)) { print($0) }
      }
      try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
      var harness = ScenarioHarness(store: store, workDirectory: out)
      harness.recordSeconds = seconds
      var outcomes: [ScenarioHarness.Outcome] = []
      for scenario in scenarios {
        let outcome = try harness.run(scenario) { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
        FileHandle.standardError.write(Data("\(outcome.scenario): rank \(outcome.rank), top \(outcome.got)\n".utf8))
        outcomes.append(outcome)
      }
      if format == "json" {
        let rows = outcomes.map {
          ["scenario": $0.scenario, "expected": $0.expected, "got": $0.got, "rank": $0.rank, "seconds": $0.seconds]
            as [String: Any]
        }
        let data = try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
      } else {
        print(ScenarioHarness.table(outcomes), terminator: "")
      }
    }
  }
}
