import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The running lab, persisted as JSON in the state directory and changed under a file lock by
/// the commands (`fault`, `heal`) and the controller. The topology in it is the *current* one:
/// faults edit Services and Ingresses as a user's mistake would; `original` is what heals restore.
public struct LabState: Codable, Sendable {
  public var topology: Topology
  public var original: Topology
  public var startedAt: Double
  public var pods: [String: PodRuntime]
  public var nodes: [String: NodeRuntime]
  public var faults: [ActiveFault]
  /// Cluster DNS names taken out of the DNS server (fault dns-nxdomain).
  public var removedDNSNames: [String]
  /// Endpoints a node's kube-proxy rules still point at after the pod is gone (kube-proxy-stale).
  public var staleEndpoints: [StaleEndpoint]
  public var resourceVersion: Int
  public var controllerPID: Int32?
  public var externalDNSPID: Int32?

  public struct PodRuntime: Codable, Sendable {
    public var pid: Int32?
    public var ready = false
    public var restarts = 0
    /// Held down by a fault (dns-down, redis-down, ingress-down): not restarted.
    public var stopped = false
    /// Killed again a few seconds after each restart (pod-crash).
    public var crashLoop = false
    public var startedAt: Double?
    /// Exits in a row without a long run between them: the back-off's exponent.
    public var backoffStreak: Int?
    public var nextStartAt: Double = 0
    public var lastExitCode: Int32?
    public var lastTerminationReason: String?
    public var cpuOverride: String?
    /// Pids of helper processes a fault added to the pod (dns-slow's delaying forwarder).
    public var helperPIDs: [Int32] = []
  }

  public struct NodeRuntime: Codable, Sendable {
    public var uplinkDownSince: Double?
    public var ready = true
    /// Random packet loss on the uplink, in percent (net-loss).
    public var lossPercent = 0
    public var holderPID: Int32?
  }

  public struct ActiveFault: Codable, Sendable, Equatable {
    public var name: String
    public var target: String
    public var appliedAt: Double
  }

  public struct StaleEndpoint: Codable, Sendable, Equatable {
    public var node: String
    public var service: String
    public var liveIP: String
    public var deadIP: String
  }

  public init(topology: Topology) {
    self.topology = topology
    original = topology
    startedAt = now()
    let plan = LabPlan(topology)
    pods = Dictionary(uniqueKeysWithValues: plan.pods.map { ($0.key, PodRuntime()) })
    nodes = Dictionary(uniqueKeysWithValues: plan.nodes.map { ($0.name, NodeRuntime()) })
    faults = []
    removedDNSNames = []
    staleEndpoints = []
    resourceVersion = 1000
  }
}

/// Where the running lab keeps its state, configuration, logs and event log.
public struct LabStore: Sendable {
  public let root: String

  public init(root: String = ProcessInfo.processInfo.environment["FATHOM_LAB_DIR"] ?? "/run/fathom-lab") {
    self.root = root
  }

  public var statePath: String { "\(root)/state.json" }
  public var lockPath: String { "\(root)/state.lock" }
  /// Watch-style events (ADDED/MODIFIED/DELETED with the object), one JSON per line.
  public var eventsPath: String { "\(root)/objects-events.jsonl" }
  /// Resource samples, one JSON per line per pod or node per second.
  public var samplesPath: String { "\(root)/samples.jsonl" }
  public var controllerLog: String { "\(root)/controller.log" }
  public func podDirectory(_ pod: LabPlan.PodPlan) -> String { "\(root)/pods/\(pod.namespace)_\(pod.name)" }
  public func nodeDirectory(_ node: String) -> String { "\(root)/nodes/\(node)" }

  public var exists: Bool { FileManager.default.fileExists(atPath: statePath) }

  public func load() throws -> LabState {
    guard let data = FileManager.default.contents(atPath: statePath) else {
      throw LabError.state("no lab is running (no \(statePath)); start one with `fathom lab up`")
    }
    do {
      return try JSONDecoder().decode(LabState.self, from: data)
    } catch {
      throw LabError.state("\(statePath) is unreadable (\(error)); `fathom lab down` removes it")
    }
  }

  public func save(_ state: LabState) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let data = try encoder.encode(state)
    let temporary = statePath + ".tmp"
    guard FileManager.default.createFile(atPath: temporary, contents: data) else {
      throw LabError.state("cannot write \(temporary)")
    }
    guard rename(temporary, statePath) == 0 else { throw LabError.state("cannot replace \(statePath)") }
  }

  /// Runs `body` on the state while holding the lab's lock, and saves what it leaves.
  public func update<T>(_ body: (inout LabState) throws -> T) throws -> T {
    let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw LabError.state("cannot open \(lockPath)") }
    defer { close(fd) }
    guard flock(fd, LOCK_EX) == 0 else { throw LabError.state("cannot lock \(lockPath)") }
    defer { flock(fd, LOCK_UN) }
    var state = try load()
    let result = try body(&state)
    try save(state)
    return result
  }
}
