/// Names and addresses derived from a topology, the same on every run (docs/lab.md,
/// "Addressing"): pods keep their names and IPs across `lab up`, so recordings compare.
public struct LabPlan: Sendable {
  public static let fabricNamespace = "fl-fabric"
  public static let clientNamespace = "fl-client"
  public static let externalDNSNamespace = "fl-extdns"
  /// Every network namespace the lab creates starts with this; `lab down` removes them all.
  public static let namespacePrefix = "fl-"

  public struct NodePlan: Sendable {
    public var name: String
    public var index: Int
    public var netns: String
    public var ip: String
    public var podCIDR: String
    public var bridgeIP: String
    /// The node's end of its uplink into the fabric, inside the node's namespace.
    public var uplink: String { "eth0" }
    /// The fabric's end of the node's uplink.
    public var fabricPort: String { "fl-up\(index)" }
  }

  public struct PodPlan: Sendable {
    public var name: String
    public var namespace: String
    public var deployment: Topology.Deployment
    public var node: String
    public var ip: String
    public var netns: String
    /// The host end of the pod's veth, named as the bridge CNI plugin names it.
    public var hostVeth: String
    public var hostNetwork: Bool
    public var labels: [String: String]
    public var podTemplateHash: String
    public var uid: String
    public var key: String { "\(namespace)/\(name)" }
    /// The pod's cgroup below its node's.
    public var cgroupName: String { "\(namespace)_\(name)" }
  }

  public struct ServicePlan: Sendable {
    public var clusterIP: String
    public var uid: String
  }

  public let topology: Topology
  public let nodes: [NodePlan]
  public let pods: [PodPlan]
  /// ClusterIP per `namespace/name`.
  public let services: [String: ServicePlan]
  public let clientIP: String
  public let externalDNSIP: String

  public var clusterCIDR: String { "\(topology.cluster.podNetwork).0.0/16" }
  public var serviceCIDR: String { "\(topology.cluster.serviceNetwork).0.0/16" }

  public init(_ topology: Topology) {
    self.topology = topology
    let network = topology.cluster.nodeNetwork
    nodes = topology.nodes.enumerated().map { offset, node in
      let index = offset + 1
      return NodePlan(
        name: node.name, index: index, netns: "fl-\(node.name)", ip: "\(network).\(10 + index)",
        podCIDR: "\(topology.cluster.podNetwork).\(index).0/24", bridgeIP: "\(topology.cluster.podNetwork).\(index).1")
    }
    clientIP = "\(network).100"
    externalDNSIP = "\(network).53"

    var pods: [PodPlan] = []
    var nextHost = [String: Int]()
    var spread = 0
    for deployment in topology.deployments {
      let templateHash = Names.templateHash("\(deployment.namespace)/\(deployment.name)")
      for replica in 0..<deployment.replicas {
        let nodeName: String
        if let pinned = deployment.node {
          nodeName = pinned
        } else {
          nodeName = topology.nodes[spread % topology.nodes.count].name
          spread += 1
        }
        let node = nodes.first { $0.name == nodeName }!
        let name =
          "\(deployment.name)-\(templateHash)-\(Names.podSuffix("\(deployment.namespace)/\(deployment.name)/\(replica)"))"
        let hostNetwork = deployment.hostNetwork ?? false
        let ip: String
        if hostNetwork {
          ip = node.ip
        } else {
          let host = nextHost[nodeName, default: 2]
          nextHost[nodeName] = host + 1
          ip = "\(topology.cluster.podNetwork).\(node.index).\(host)"
        }
        pods.append(
          PodPlan(
            name: name, namespace: deployment.namespace, deployment: deployment, node: nodeName, ip: ip,
            netns: hostNetwork ? node.netns : "fl-\(deployment.namespace)-\(name)",
            hostVeth: hostNetwork ? "" : "veth" + Names.hex8("\(deployment.namespace)/\(name)"),
            hostNetwork: hostNetwork,
            labels: ["app": deployment.name, "pod-template-hash": templateHash],
            podTemplateHash: templateHash, uid: Names.uid("pod/\(deployment.namespace)/\(name)")))
      }
    }
    self.pods = pods

    var services: [String: ServicePlan] = [:]
    var next = 1
    for service in topology.services {
      let ip: String
      if let fixed = service.clusterIP {
        ip = fixed
      } else {
        ip = "\(topology.cluster.serviceNetwork).\(100 + next / 250).\(next % 250 + 1)"
        next += 1
      }
      services["\(service.namespace)/\(service.name)"] = ServicePlan(
        clusterIP: ip, uid: Names.uid("service/\(service.namespace)/\(service.name)"))
    }
    self.services = services
  }

  public func node(named name: String) -> NodePlan? { nodes.first { $0.name == name } }
  public func pod(_ key: String) -> PodPlan? { pods.first { $0.key == key || $0.name == key } }
}

/// Deterministic Kubernetes-looking names and ids (FNV-1a of a stable key).
enum Names {
  static func fnv(_ text: String, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
    var hash = seed
    for byte in text.utf8 {
      hash ^= UInt64(byte)
      hash = hash &* 0x100_0000_01b3
    }
    return hash
  }

  /// Kubernetes' "safe" alphabet for generated names (no vowels, no confusable digits).
  static let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")

  static func encode(_ value: UInt64, length: Int) -> String {
    var value = value
    var output = ""
    for _ in 0..<length {
      output.append(alphabet[Int(value % UInt64(alphabet.count))])
      value /= UInt64(alphabet.count)
    }
    return output
  }

  static func templateHash(_ key: String) -> String { encode(fnv(key), length: 10) }
  static func podSuffix(_ key: String) -> String { encode(fnv(key, seed: 0x1234_5678_9abc_def1), length: 5) }

  static func hex8(_ key: String) -> String {
    let value = fnv(key) & 0xffff_ffff
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 8 - digits.count) + digits
  }

  /// A UUID-shaped id, stable for the key.
  static func uid(_ key: String) -> String {
    let a = fnv(key)
    let b = fnv(key, seed: 0x9e37_79b9_7f4a_7c15)
    func hex(_ value: UInt64, _ count: Int) -> String {
      let digits = String(value, radix: 16)
      return String((String(repeating: "0", count: 16 - digits.count) + digits).suffix(count))
    }
    return "\(hex(a >> 32, 8))-\(hex(a >> 16, 4))-4\(hex(a, 3))-a\(hex(b >> 48, 3))-\(hex(b, 12))"
  }
}
