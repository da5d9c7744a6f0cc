import Foundation

/// A Kubernetes resource as tagging names it; `id` is its SmartEncoding id (records store ids,
/// the dictionary holds these fields).
public struct Resource: Sendable, Equatable {
  public enum Kind: String, Sendable {
    case pod, node, service, ingress, workload, namespace
  }
  public var id: Int32
  public var kind: Kind
  public var namespace: String
  public var name: String
  public var labels: [String: String]
  /// Pods: their node. Services: their type.
  public var detail: String
  /// Pods: `Deployment/frontend`, `DaemonSet/x`, ... when known.
  public var workload: String
  public var validFromMicros: Int64
  public var validToMicros: Int64

  public init(
    id: Int32, kind: Kind, namespace: String, name: String, labels: [String: String], detail: String, workload: String,
    validFromMicros: Int64, validToMicros: Int64
  ) {
    self.id = id
    self.kind = kind
    self.namespace = namespace
    self.name = name
    self.labels = labels
    self.detail = detail
    self.workload = workload
    self.validFromMicros = validFromMicros
    self.validToMicros = validToMicros
  }
}

/// What the cluster knew about an address at one instant.
public struct EndpointIdentity: Sendable, Equatable {
  public enum Kind: String, Sendable, CaseIterable {
    /// A pod IP (or a hostNetwork pod listening on a node IP and port).
    case pod
    /// A node's IP, no pod known on that port.
    case node
    /// A Service's ClusterIP and port.
    case service
    /// A node IP and a Service's nodePort.
    case nodePort = "node_port"
    /// Not a cluster address.
    case external
  }
  public var kind: Kind
  public var pod: Int32 = 0
  public var workload: Int32 = 0
  public var node: Int32 = 0
  public var service: Int32 = 0
  public var namespace: Int32 = 0

  public init(
    kind: Kind, pod: Int32 = 0, workload: Int32 = 0, node: Int32 = 0, service: Int32 = 0, namespace: Int32 = 0
  ) {
    self.kind = kind
    self.pod = pod
    self.workload = workload
    self.node = node
    self.service = service
    self.namespace = namespace
  }

  public static let external = EndpointIdentity(kind: .external)
}

/// The cluster's objects over time: (ip, port, protocol, time) → pod, node, Service or external.
/// Built from a snapshot (valid at all times) or from a watch-style event log (each state valid
/// from its event to the next), so reused IPs resolve to the pod that had them then.
public final class ClusterIndex: @unchecked Sendable {
  /// One state of the cluster, valid from `fromMicros` to the next state.
  struct State {
    var fromMicros: Int64
    var podsByIP: [String: Int32] = [:]
    var hostNetworkPods: [String: Int32] = [:]  // "nodeIP:port/proto"
    var nodesByIP: [String: Int32] = [:]
    var servicesByAddress: [String: Int32] = [:]  // "clusterIP:port/proto"
    var clusterIPs: [String: Int32] = [:]
    var nodePorts: [String: Int32] = [:]  // "port/proto"
    /// pod id → Services selecting it, with their target ports: "port/proto" → service id.
    var podServices: [Int32: [String: Int32]] = [:]
    var podNode: [Int32: Int32] = [:]
    var podWorkload: [Int32: Int32] = [:]
    var podNamespace: [Int32: Int32] = [:]
    var serviceNamespace: [Int32: Int32] = [:]
    var ingressRules: [IngressRule] = []
    var ingressControllerPods: Set<Int32> = []
  }

  public struct IngressRule: Sendable {
    public var ingress: Int32
    public var host: String
    public var path: String
    public var exact: Bool
    public var service: Int32
  }

  private(set) var states: [State] = []
  public private(set) var resources: [Resource] = []
  private var resourceIDs: [String: Int32] = [:]

  /// Index of objects valid at every instant.
  public convenience init(snapshot objects: [KubeObject]) {
    self.init()
    add(state: objects, at: Int64.min)
  }

  /// Index of a watch-style event log (`{"time","type","object"}` per line, as the lab writes).
  public convenience init(eventLog path: String) throws {
    self.init()
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
      throw KubeDecoder.Failure(message: "cannot read \(path)")
    }
    var current: [String: KubeObject] = [:]
    var order: [String] = []
    var pendingTime: Int64?
    for (number, line) in text.split(separator: "\n").enumerated() {
      guard let event = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
        let type = event["type"] as? String, let objectTree = event["object"],
        let time = (event["time"] as? String).flatMap(Self.micros)
      else { throw KubeDecoder.Failure(message: "\(path):\(number + 1): not a watch event") }
      let data = try JSONSerialization.data(withJSONObject: objectTree)
      guard
        let object = try KubeDecoder.decode(String(decoding: data, as: UTF8.self), source: "\(path):\(number + 1)")
          .first
      else { continue }
      if let pending = pendingTime, pending != time {
        add(state: order.compactMap { current[$0] }, at: pending)
      }
      pendingTime = time
      if type == "DELETED" {
        current[object.key] = nil
      } else {
        if current[object.key] == nil && !order.contains(object.key) { order.append(object.key) }
        current[object.key] = object
      }
    }
    if let pending = pendingTime { add(state: order.compactMap { current[$0] }, at: pending) }
  }

  init() {}

  static func micros(_ text: String) -> Int64? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    var date = formatter.date(from: text)
    if date == nil {
      formatter.formatOptions = [.withInternetDateTime]
      date = formatter.date(from: text)
    }
    guard let date else { return nil }
    // ISO8601DateFormatter keeps milliseconds only; take the microseconds from the text.
    var micros = Int64((date.timeIntervalSince1970).rounded(.down)) * 1_000_000
    if let dot = text.firstIndex(of: "."),
      let end = text.firstIndex(of: "Z") ?? text.lastIndex(where: { $0 == "+" || $0 == "-" }),
      dot < end
    {
      let digits = String(text[text.index(after: dot)..<end].prefix(6))
      micros += Int64(digits + String(repeating: "0", count: 6 - digits.count)) ?? 0
    }
    return micros
  }

  /// The SmartEncoding id of a resource, creating it (or widening its validity) as needed.
  func resourceID(
    _ kind: Resource.Kind, _ namespace: String, _ name: String, labels: [String: String] = [:], detail: String = "",
    workload: String = "", at time: Int64
  ) -> Int32 {
    let key = "\(kind.rawValue)/\(namespace)/\(name)"
    if let id = resourceIDs[key] {
      let index = Int(id) - 1
      if time != Int64.min {
        resources[index].validToMicros = max(resources[index].validToMicros, time)
      }
      if !labels.isEmpty { resources[index].labels = labels }
      if !detail.isEmpty { resources[index].detail = detail }
      if !workload.isEmpty { resources[index].workload = workload }
      return id
    }
    let id = Int32(resources.count + 1)
    resources.append(
      Resource(
        id: id, kind: kind, namespace: namespace, name: name, labels: labels, detail: detail, workload: workload,
        validFromMicros: time, validToMicros: time == Int64.min ? Int64.max : time))
    resourceIDs[key] = id
    return id
  }

  public func resource(_ id: Int32) -> Resource? {
    id > 0 && Int(id) <= resources.count ? resources[Int(id) - 1] : nil
  }

  /// Builds the state of `objects` valid from `time`.
  func add(state objects: [KubeObject], at time: Int64) {
    var state = State(fromMicros: time)
    var replicaSetOwners: [String: String] = [:]  // "ns/rs" → "Deployment/name"
    var pods: [(Pod, Int32)] = []
    var services: [Service] = []
    for object in objects {
      if case .workload(let kind, let workload) = object, kind == "ReplicaSet" || kind == "Job",
        let owner = workload.metadata?.ownerReferences?.first(where: { $0.controller == true })
          ?? workload.metadata?.ownerReferences?.first,
        let ownerKind = owner.kind, let ownerName = owner.name
      {
        replicaSetOwners["\(workload.metadata?.namespace ?? "")/\(workload.metadata?.name ?? "")"] =
          "\(ownerKind)/\(ownerName)"
      }
    }
    for object in objects {
      switch object {
      case .node(let node):
        let id = resourceID(.node, "", node.metadata?.name ?? "", labels: node.metadata?.labels ?? [:], at: time)
        for ip in node.internalIPs { state.nodesByIP[ip] = id }
      case .service(let service):
        services.append(service)
      case .pod(let pod):
        let namespace = pod.metadata?.namespace ?? "default"
        let workload = Self.workload(of: pod, replicaSetOwners: replicaSetOwners)
        let id = resourceID(
          .pod, namespace, pod.metadata?.name ?? "", labels: pod.metadata?.labels ?? [:],
          detail: pod.spec?.nodeName ?? "",
          workload: workload, at: time)
        pods.append((pod, id))
      default:
        break
      }
    }
    for (pod, id) in pods {
      let namespace = pod.metadata?.namespace ?? "default"
      state.podNamespace[id] = resourceID(.namespace, "", namespace, at: time)
      if let nodeName = pod.spec?.nodeName { state.podNode[id] = resourceID(.node, "", nodeName, at: time) }
      let workload = resource(id)?.workload ?? ""
      if let slash = workload.firstIndex(of: "/") {
        state.podWorkload[id] = resourceID(
          .workload, namespace, String(workload[workload.index(after: slash)...]), detail: String(workload[..<slash]),
          at: time)
      }
      if workload.lowercased().contains("ingress") || pod.metadata?.labels?["app.kubernetes.io/name"] == "ingress-nginx"
      {
        state.ingressControllerPods.insert(id)
      }
      let phase = pod.status?.phase ?? "Running"
      guard phase != "Succeeded" && phase != "Failed" else { continue }
      if pod.spec?.hostNetwork == true {
        for container in pod.spec?.containers ?? [] {
          for port in container.ports ?? [] {
            guard let number = port.hostPort ?? port.containerPort else { continue }
            for ip in pod.ips + [pod.status?.hostIP].compactMap({ $0 }) {
              state.hostNetworkPods["\(ip):\(number)/\((port.protocol ?? "TCP").uppercased())"] = id
            }
          }
        }
      } else {
        for ip in pod.ips { state.podsByIP[ip] = id }
      }
    }
    for service in services {
      let namespace = service.metadata?.namespace ?? "default"
      let id = resourceID(
        .service, namespace, service.metadata?.name ?? "", labels: service.metadata?.labels ?? [:],
        detail: service.spec?.type ?? "ClusterIP", at: time)
      state.serviceNamespace[id] = resourceID(.namespace, "", namespace, at: time)
      for port in service.spec?.ports ?? [] {
        let transport = (port.protocol ?? "TCP").uppercased()
        guard let number = port.port else { continue }
        for ip in service.clusterIPs {
          state.servicesByAddress["\(ip):\(number)/\(transport)"] = id
          state.clusterIPs[ip] = id
        }
        if let nodePort = port.nodePort { state.nodePorts["\(nodePort)/\(transport)"] = id }
        // Pods behind the Service (selector), by the port they serve it on.
        guard let selector = service.spec?.selector, !selector.isEmpty else { continue }
        for (pod, podID) in pods where (pod.metadata?.namespace ?? "default") == namespace {
          let labels = pod.metadata?.labels ?? [:]
          guard selector.allSatisfy({ labels[$0.key] == $0.value }) else { continue }
          let target: Int?
          switch port.targetPort {
          case .int(let value): target = value
          case .string(let name):
            target = pod.spec?.containers?.flatMap { $0.ports ?? [] }.first { $0.name == name }?.containerPort
          case nil: target = number
          }
          if let target { state.podServices[podID, default: [:]]["\(target)/\(transport)"] = id }
        }
      }
    }
    for object in objects {
      guard case .ingress(let ingress) = object else { continue }
      let namespace = ingress.metadata?.namespace ?? "default"
      let id = resourceID(.ingress, namespace, ingress.metadata?.name ?? "", at: time)
      for rule in ingress.spec?.rules ?? [] {
        for path in rule.http?.paths ?? [] {
          guard let serviceName = path.backend?.service?.name else { continue }
          state.ingressRules.append(
            IngressRule(
              ingress: id, host: rule.host ?? "", path: path.path ?? "/", exact: path.pathType == "Exact",
              service: resourceID(.service, namespace, serviceName, at: time)))
        }
      }
    }
    states.append(state)
    states.sort { $0.fromMicros < $1.fromMicros }
  }

  static func workload(of pod: Pod, replicaSetOwners: [String: String]) -> String {
    guard
      let owner = pod.metadata?.ownerReferences?.first(where: { $0.controller == true })
        ?? pod.metadata?.ownerReferences?.first,
      let kind = owner.kind, let name = owner.name
    else { return "" }
    if kind == "ReplicaSet" {
      if let deployment = replicaSetOwners["\(pod.metadata?.namespace ?? "")/\(name)"] { return deployment }
      // No ReplicaSet object: its name is the Deployment's plus the pod-template-hash.
      if let hash = pod.metadata?.labels?["pod-template-hash"], name.hasSuffix("-\(hash)") {
        return "Deployment/\(name.dropLast(hash.count + 1))"
      }
    }
    return "\(kind)/\(name)"
  }

  func state(at micros: Int64) -> State? {
    guard !states.isEmpty else { return nil }
    var low = 0
    var high = states.count - 1
    if micros < states[0].fromMicros { return states[0] }
    while low < high {
      let middle = (low + high + 1) / 2
      if states[middle].fromMicros <= micros { low = middle } else { high = middle - 1 }
    }
    return states[low]
  }

  /// Who `ip:port` was at `micros`. `asServer`: the address received the connection (a Service
  /// port or a pod's listening port apply).
  public func identify(ip: String, port: UInt16, transport: String, at micros: Int64, asServer: Bool)
    -> EndpointIdentity
  {
    guard let state = state(at: micros) else { return .external }
    let portKey = "\(port)/\(transport)"
    if asServer, let service = state.servicesByAddress["\(ip):\(portKey)"] {
      return EndpointIdentity(kind: .service, service: service, namespace: state.serviceNamespace[service] ?? 0)
    }
    if let pod = state.podsByIP[ip] ?? (asServer ? state.hostNetworkPods["\(ip):\(portKey)"] : nil) {
      return EndpointIdentity(
        kind: .pod, pod: pod, workload: state.podWorkload[pod] ?? 0, node: state.podNode[pod] ?? 0,
        service: asServer ? state.podServices[pod]?[portKey] ?? 0 : 0, namespace: state.podNamespace[pod] ?? 0)
    }
    if let node = state.nodesByIP[ip] {
      if asServer, let service = state.nodePorts[portKey] {
        return EndpointIdentity(
          kind: .nodePort, node: node, service: service, namespace: state.serviceNamespace[service] ?? 0)
      }
      return EndpointIdentity(kind: .node, node: node)
    }
    if let service = state.clusterIPs[ip], asServer {
      // A ClusterIP on a port the Service does not have.
      return EndpointIdentity(kind: .service, service: service, namespace: state.serviceNamespace[service] ?? 0)
    }
    return .external
  }

  /// The Ingress rule a request to an ingress controller matched (host, then longest path).
  public func ingressRule(host: String, path: String, at micros: Int64) -> IngressRule? {
    guard let state = state(at: micros) else { return nil }
    let bareHost = host.split(separator: ":").first.map(String.init) ?? host
    let candidates = state.ingressRules.filter { $0.host.isEmpty || $0.host == bareHost }
    return candidates.filter { rule in
      rule.exact
        ? path == rule.path
        : (path == rule.path || path.hasPrefix(rule.path.hasSuffix("/") ? rule.path : rule.path + "/")
          || rule.path == "/")
    }.max { ($0.host.isEmpty ? 0 : 1, $0.path.count) < ($1.host.isEmpty ? 0 : 1, $1.path.count) }
  }

  public func isIngressController(pod: Int32, at micros: Int64) -> Bool {
    state(at: micros)?.ingressControllerPods.contains(pod) ?? false
  }

  /// Node resource ids by node name, for capture points.
  public func nodeID(named name: String) -> Int32? {
    resourceIDs["node//\(name)"]
  }

  /// Whether `ip` is `node`'s own address at `micros`.
  public func isNodeAddress(ip: String, node: Int32, at micros: Int64) -> Bool {
    state(at: micros)?.nodesByIP[ip] == node
  }

  /// Whether `ip` belongs to `node` at `micros` (the node itself or one of its pods).
  public func isLocal(ip: String, node: Int32, at micros: Int64) -> Bool {
    guard let state = state(at: micros) else { return false }
    if state.nodesByIP[ip] == node { return true }
    if let pod = state.podsByIP[ip] { return state.podNode[pod] == node }
    return false
  }
}
