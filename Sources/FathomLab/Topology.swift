import Foundation
import Yams

/// What the lab builds: nodes, workloads, Services, Ingresses and the load that drives them.
/// Read from YAML (`fathom lab up --topology FILE`); `Topology.defaultYAML` is the default.
public struct Topology: Codable, Sendable, Equatable {
  public var cluster: ClusterSettings
  public var nodes: [Node]
  public var namespaces: [String]
  public var deployments: [Deployment]
  public var services: [Service]
  public var ingresses: [Ingress]
  /// Names the external DNS server answers (the ingress hosts), each with the node it points at.
  public var externalDNS: [ExternalName]
  public var load: LoadPlan

  public struct ClusterSettings: Codable, Sendable, Equatable {
    public var domain: String
    /// Node i (from 1) gets the pod subnet `<podNetwork>.<i>.0/24`.
    public var podNetwork: String
    /// ClusterIPs are allocated from `<serviceNetwork>.0.0/16`.
    public var serviceNetwork: String
    public var dnsServiceIP: String
    /// The /24 that joins nodes, the external client and the external DNS server.
    public var nodeNetwork: String
    /// Seconds between a node losing its uplink and it, and its pods, turning NotReady.
    public var nodeMonitorGracePeriod: Double
  }

  public struct Node: Codable, Sendable, Equatable {
    public var name: String
  }

  /// A Deployment: `replicas` pods running `program`.
  public struct Deployment: Codable, Sendable, Equatable {
    public var name: String
    public var namespace: String
    /// `web` (Fathom's demo HTTP service), `redis`, `dns` (cluster DNS), `ingress` (nginx
    /// ingress controller) or `client` (an idle pod the load runs in).
    public var program: Program
    public var replicas: Int
    public var port: Int?
    /// CPU limit in Kubernetes notation (`500m`, `1`); none means unlimited.
    public var cpu: String?
    /// Memory limit in Kubernetes notation (`128Mi`); none means unlimited.
    public var memory: String?
    /// Downstream URLs the demo service calls for each request (env `CALLS` in the Pod).
    public var calls: [String]?
    /// `host:port` of a Redis the demo service uses for each request (env `REDIS`).
    public var redis: String?
    /// Pin every replica to this node; otherwise replicas are spread over the nodes.
    public var node: String?
    /// Run in the node's network namespace (ingress mode `hostNetwork`).
    public var hostNetwork: Bool?
  }

  public enum Program: String, Codable, Sendable, Equatable {
    case web, redis, dns, ingress, client
  }

  public struct Service: Codable, Sendable, Equatable {
    public var name: String
    public var namespace: String
    /// `ClusterIP` or `NodePort` (`LoadBalancer` is treated as NodePort).
    public var type: String?
    public var clusterIP: String?
    public var selector: [String: String]
    public var ports: [ServicePort]
  }

  public struct ServicePort: Codable, Sendable, Equatable {
    public var name: String?
    public var port: Int
    public var targetPort: Int?
    public var nodePort: Int?
    public var `protocol`: String?
  }

  public struct Ingress: Codable, Sendable, Equatable {
    public var name: String
    public var namespace: String
    public var rules: [IngressRule]
  }

  public struct IngressRule: Codable, Sendable, Equatable {
    public var host: String
    public var paths: [IngressPath]
  }

  public struct IngressPath: Codable, Sendable, Equatable {
    public var path: String
    public var pathType: String?
    public var service: String
    public var port: Int
  }

  public struct ExternalName: Codable, Sendable, Equatable {
    public var name: String
    public var node: String
  }

  /// Requests `lab load` sends. A node's name as the host of an external URL stands for its
  /// InternalIP (the external client has no DNS for nodes).
  public struct LoadPlan: Codable, Sendable, Equatable {
    /// Sent from every pod of `clientDeployment`.
    public var inCluster: [LoadTarget]
    /// Sent from the external client.
    public var external: [LoadTarget]
    public var clientDeployment: String
    public var clientNamespace: String
    /// Requests per second per target and sender.
    public var rate: Double
  }

  public struct LoadTarget: Codable, Sendable, Equatable {
    /// The access path this target exercises, as written to the load truth (`path` field).
    public var path: String
    public var url: String

    public init(path: String, url: String) {
      self.path = path
      self.url = url
    }
  }

  public static func parse(yaml: String) throws -> Topology {
    let topology: Topology
    do {
      topology = try YAMLDecoder().decode(Topology.self, from: yaml)
    } catch {
      throw LabError.topology("cannot read the topology: \(error)")
    }
    try topology.validate()
    return topology
  }

  public static func load(path: String?) throws -> Topology {
    guard let path else { return try parse(yaml: defaultYAML) }
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
      throw LabError.topology("cannot read \(path)")
    }
    return try parse(yaml: text)
  }

  /// Rejects topologies the lab cannot build, with the reason.
  public func validate() throws {
    guard !nodes.isEmpty, nodes.count <= 50 else { throw LabError.topology("1 to 50 nodes") }
    let nodeNames = Set(nodes.map(\.name))
    guard nodeNames.count == nodes.count else { throw LabError.topology("node names must be unique") }
    for deployment in deployments {
      guard namespaces.contains(deployment.namespace) else {
        throw LabError.topology("deployment \(deployment.name): namespace \(deployment.namespace) is not listed")
      }
      guard (0...20).contains(deployment.replicas) else {
        throw LabError.topology("deployment \(deployment.name): 0 to 20 replicas")
      }
      if let node = deployment.node, !nodeNames.contains(node) {
        throw LabError.topology("deployment \(deployment.name): unknown node \(node)")
      }
      if deployment.program != .client && deployment.port == nil && deployment.program != .dns {
        throw LabError.topology("deployment \(deployment.name): needs a port")
      }
      guard deployment.name.count <= 40 else { throw LabError.topology("deployment \(deployment.name): name too long") }
      if let cpu = deployment.cpu, Quantity.millicores(cpu) == nil {
        throw LabError.topology("deployment \(deployment.name): cpu \(cpu) is not a quantity")
      }
      if let memory = deployment.memory, Quantity.bytes(memory) == nil {
        throw LabError.topology("deployment \(deployment.name): memory \(memory) is not a quantity")
      }
    }
    for service in services {
      guard namespaces.contains(service.namespace) else {
        throw LabError.topology("service \(service.name): namespace \(service.namespace) is not listed")
      }
      for port in service.ports where port.nodePort != nil {
        guard (30000...32767).contains(port.nodePort!) else {
          throw LabError.topology("service \(service.name): nodePort outside 30000-32767")
        }
      }
    }
    for name in externalDNS where !nodeNames.contains(name.node) {
      throw LabError.topology("external name \(name.name): unknown node \(name.node)")
    }
    guard load.rate > 0, load.rate <= 1000 else { throw LabError.topology("load rate must be in (0, 1000]") }
  }
}

/// Kubernetes resource quantities.
public enum Quantity {
  /// `500m` → 500, `2` → 2000.
  public static func millicores(_ text: String) -> Int? {
    if text.hasSuffix("m") { return Int(text.dropLast()) }
    if let value = Double(text) { return Int(value * 1000) }
    return nil
  }

  /// `128Mi` → 134217728, `1G` → 10^9.
  public static func bytes(_ text: String) -> Int? {
    let units: [(String, Int)] = [
      ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("K", 1000), ("M", 1_000_000), ("G", 1_000_000_000),
    ]
    for (suffix, factor) in units where text.hasSuffix(suffix) {
      return Int(text.dropLast(suffix.count)).map { $0 * factor }
    }
    return Int(text)
  }
}

public enum LabError: Error, CustomStringConvertible {
  case topology(String)
  case missing(String)
  case command(String)
  case state(String)

  public var description: String {
    switch self {
    case .topology(let message): "topology: \(message)"
    case .missing(let message): message
    case .command(let message): message
    case .state(let message): message
    }
  }
}
