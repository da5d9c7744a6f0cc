import FathomKube
import FathomStore
import Foundation

/// Requests, errors and latency of one pod or Service at its server side.
struct RED {
  var requests = 0
  var serverErrors = 0
  var timeouts = 0
  var histogram = LatencyHistogram()
  var errorRatio: Double { requests == 0 ? 0 : Double(serverErrors + timeouts) / Double(requests) }

  mutating func add(_ other: RED) {
    requests += other.requests
    serverErrors += other.serverErrors
    timeouts += other.timeouts
    histogram.merge(other.histogram)
  }
}

/// A store read on another thread while the caller reads the rest; the store's reads are
/// independent (SQLite: a pool of readers; ClickHouse: separate requests).
final class BackgroundRead<Value>: @unchecked Sendable {
  private let read: () throws -> Value
  private let done = DispatchSemaphore(value: 0)
  private var result: Result<Value, Error>?

  init(_ read: @escaping () throws -> Value) {
    self.read = read
    Thread { self.run() }.start()
  }

  private func run() {
    result = Result { try read() }
    done.signal()
  }

  func wait() throws -> Value {
    done.wait()
    done.signal()
    return try result!.get()
  }
}

/// Everything the steps decide on, read once from the store and the objects for the window (and
/// the baseline), plus what follows from it: the Services on the target's path and their pods.
struct RunbookContext {
  let input: DiagnosisInput
  var thresholds: Thresholds { input.thresholds }
  let window: ClosedRange<Int64>
  /// The window's flow records, counted by kind of connection.
  let flowCounts: [FlowCount]
  /// Indexes into `flowCounts` by the Service the connection was to (the steps ask per Service).
  let countsByService: [String: [Int]]
  /// Per node, packets lost between its uplink and its pods.
  let pathLoss: [NodePathLoss]
  /// DNS lookups at the clients' own interfaces (`c`).
  let lookups: [StoredRequest]
  let baselineLookups: [StoredRequest]
  /// Service → pod → RED at the server pods.
  let red: [String: [String: RED]]
  let baselineRED: [String: RED]
  let baselineSeconds: Double
  let windowSeconds: Double
  /// Pod → the Services selecting it.
  let podServices: [String: [String]]
  /// Pod → `namespace/workload` (through ReplicaSets to Deployments).
  let podWorkloads: [String: String]
  /// The target and every Service below it (called, or whose name its pods looked up).
  let path: [String]
  let pathPods: Set<String>

  init(input: DiagnosisInput) throws {
    self.input = input
    let store = input.store
    window = try input.window ?? store.recordedRange() ?? 0...0
    windowSeconds = max(1, Double(window.upperBound - window.lowerBound) / 1e6)
    // The flow aggregates (the largest reads) on a second thread while this one reads the rest.
    let window = window
    let flowRead = BackgroundRead { try store.flowSummary(from: window.lowerBound, to: window.upperBound) }
    lookups = try store.requests(
      protocolName: "dns", observationPoint: "c", from: window.lowerBound, to: window.upperBound)
    red = Self.red(try store.serverRollups(from: window.lowerBound, to: window.upperBound))
    if let baseline = input.baseline {
      baselineLookups = try store.requests(
        protocolName: "dns", observationPoint: "c", from: baseline.lowerBound, to: baseline.upperBound)
      baselineRED = Self.red(try store.serverRollups(from: baseline.lowerBound, to: baseline.upperBound)).mapValues {
        $0.values.reduce(into: RED()) { $0.add($1) }
      }
      baselineSeconds = max(1, Double(baseline.upperBound - baseline.lowerBound) / 1e6)
    } else {
      baselineLookups = []
      baselineRED = [:]
      baselineSeconds = 0
    }
    let summary = try flowRead.wait()
    (flowCounts, pathLoss) = (summary.counts, summary.pathLoss)
    var byService: [String: [Int]] = [:]
    for index in flowCounts.indices where !flowCounts[index].serverService.isEmpty {
      byService[flowCounts[index].serverService, default: []].append(index)
    }
    countsByService = byService
    podServices = Self.servicesOfPods(input.objects)
    podWorkloads = Self.workloadsOfPods(input.objects)

    // Services the path's pods call, or tried to resolve (a name that did not resolve leaves
    // no connection).
    var calls: [String: Set<String>] = [:]
    for flow in flowCounts where flow.observationPoint == "c" && !flow.clientPod.isEmpty && !flow.serverService.isEmpty
    {
      for service in podServices[flow.clientPod] ?? [] where service != flow.serverService {
        calls[service, default: []].insert(flow.serverService)
      }
    }
    var serviceNames: [String: String] = [:]
    for object in input.objects {
      if case .service(let service) = object, let name = service.metadata?.name {
        let namespace = service.metadata?.namespace ?? "default"
        serviceNames[Self.dnsName(of: "\(namespace)/\(name)")] = "\(namespace)/\(name)"
      }
    }
    for lookup in lookups where !lookup.clientPod.isEmpty {
      guard let service = serviceNames[lookup.domain] else { continue }
      for caller in podServices[lookup.clientPod] ?? [] where caller != service {
        calls[caller, default: []].insert(service)
      }
    }
    var path = [input.service]
    var index = 0
    while index < path.count {
      for next in (calls[path[index]] ?? []).sorted() where !path.contains(next) { path.append(next) }
      index += 1
    }
    self.path = path
    pathPods = Set(podServices.filter { !Set($0.value).isDisjoint(with: path) }.keys)
  }

  static func red(_ rollups: [ServerRollup]) -> [String: [String: RED]] {
    var result: [String: [String: RED]] = [:]
    for rollup in rollups {
      result[rollup.service, default: [:]][rollup.pod, default: RED()].add(
        RED(
          requests: rollup.requests, serverErrors: rollup.serverErrors, timeouts: rollup.timeouts,
          histogram: rollup.histogram))
    }
    return result
  }

  // MARK: Objects

  /// The cluster DNS name of a Service (`namespace/name`).
  static func dnsName(of service: String) -> String {
    let parts = service.split(separator: "/")
    return "\(parts.last ?? "").\(parts.first ?? "").svc.cluster.local"
  }

  static func key(_ metadata: ObjectMeta?) -> String { "\(metadata?.namespace ?? "default")/\(metadata?.name ?? "")" }

  /// Services by their pods (selector → labels).
  static func servicesOfPods(_ objects: [KubeObject]) -> [String: [String]] {
    var pods: [(String, [String: String])] = []
    var services: [(String, [String: String])] = []
    for object in objects {
      switch object {
      case .pod(let pod): pods.append((key(pod.metadata), pod.metadata?.labels ?? [:]))
      case .service(let service):
        if let selector = service.spec?.selector, !selector.isEmpty {
          services.append((key(service.metadata), selector))
        }
      default: break
      }
    }
    var result: [String: [String]] = [:]
    for (pod, labels) in pods {
      let namespace = pod.split(separator: "/").first.map(String.init) ?? ""
      for (service, selector) in services where service.hasPrefix(namespace + "/") {
        if selector.allSatisfy({ labels[$0.key] == $0.value }) { result[pod, default: []].append(service) }
      }
    }
    return result
  }

  /// Each pod's top owner: a ReplicaSet's Deployment, else the owner itself, else none.
  static func workloadsOfPods(_ objects: [KubeObject]) -> [String: String] {
    var owners: [String: String] = [:]
    for object in objects {
      if case .workload(_, let workload) = object,
        let owner = workload.metadata?.ownerReferences?.first(where: { $0.controller == true })?.name
      {
        owners[key(workload.metadata)] = "\(workload.metadata?.namespace ?? "default")/\(owner)"
      }
    }
    var result: [String: String] = [:]
    for object in objects {
      guard case .pod(let pod) = object,
        let owner = pod.metadata?.ownerReferences?.first(where: { $0.controller == true })?.name
      else { continue }
      let direct = "\(pod.metadata?.namespace ?? "default")/\(owner)"
      result[key(pod.metadata)] = owners[direct] ?? direct
    }
    return result
  }

  func endpoints(of service: String) -> (ready: Int, notReady: Int)? {
    for object in input.objects {
      guard case .endpoints(let endpoints) = object, Self.key(endpoints.metadata) == service else { continue }
      let subsets = endpoints.subsets ?? []
      return (
        subsets.reduce(0) { $0 + ($1.addresses?.count ?? 0) },
        subsets.reduce(0) { $0 + ($1.notReadyAddresses?.count ?? 0) }
      )
    }
    return nil
  }

  /// The node a pod (`namespace/name`) runs on, from the objects.
  func node(ofPod key: String) -> String? {
    for object in input.objects {
      if case .pod(let pod) = object, Self.key(pod.metadata) == key { return pod.spec?.nodeName }
    }
    return nil
  }

  func serviceObject(_ key: String) -> Service? {
    for object in input.objects {
      if case .service(let service) = object, Self.key(service.metadata) == key { return service }
    }
    return nil
  }

  /// Pods of an ingress controller: a workload named like one, or ingress-nginx's label.
  var ingressControllerPods: Set<String> {
    var result = Set<String>()
    for object in input.objects {
      guard case .pod(let pod) = object else { continue }
      let key = Self.key(pod.metadata)
      if (podWorkloads[key] ?? key).lowercased().contains("ingress")
        || pod.metadata?.labels?["app.kubernetes.io/name"] == "ingress-nginx"
      {
        result.insert(key)
      }
    }
    return result
  }

  // MARK: Facts per Service

  /// With `--from`, whether a client pod counts toward the target's own lookups and connections.
  func countsAsClient(_ pod: String, of service: String) -> Bool {
    guard let from = input.from, service == input.service else { return true }
    return podWorkloads[pod] == from
  }

  /// Connections to a Service (by its ClusterIP or NodePort, from its clients' side) by close type.
  func connectionFailures(to service: String) -> [String: Int] {
    var result: [String: Int] = [:]
    for flow in flows(to: service)
    where (flow.serverKind == "service" || flow.serverKind == "node_port")
      && (flow.observationPoint == "c" || flow.observationPoint == "c-nd")
      && countsAsClient(flow.clientPod, of: service)
    {
      result[flow.closeType, default: 0] += flow.flows
    }
    return result
  }

  /// The window's flow counts of connections to one Service.
  func flows(to service: String) -> LazyMapSequence<[Int], FlowCount> {
    (countsByService[service] ?? []).lazy.map { flowCounts[$0] }
  }

  /// The Service's RED summed over its pods in the window.
  func total(_ service: String) -> RED {
    (red[service] ?? [:]).values.reduce(into: RED()) { $0.add($1) }
  }

  /// Nothing about the target at all: say so instead of "no fault".
  func nothingSeenFindings() -> [Finding] {
    if let from = input.from {
      // The caller's own attempts: connections to the Service or lookups of its name.
      let name = Self.dnsName(of: input.service)
      let tried =
        flows(to: input.service).contains { podWorkloads[$0.clientPod] == from }
        || lookups.contains { $0.domain == name && podWorkloads[$0.clientPod] == from }
      guard !tried else { return [] }
      return [
        Finding(
          component: "service \(input.service)", kind: "no traffic captured", step: "service-golden", score: 0.1,
          evidence: ["no connection to it and no lookup of \(name) by \(from)'s pods in the window"],
          next: "check that \(from) calls \(input.service) and that the captures cover its nodes and time")
      ]
    }
    let targetSeen = !(red[input.service] ?? [:]).isEmpty || !connectionFailures(to: input.service).isEmpty
    guard !targetSeen else { return [] }
    return [
      Finding(
        component: "service \(input.service)", kind: "no traffic captured", step: "service-golden", score: 0.1,
        evidence: ["no request to its pods and no connection to its ClusterIP or NodePort in the window"],
        next: "check the Service's name and that the captures cover its nodes and time")
    ]
  }
}
