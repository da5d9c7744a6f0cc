/// The parts of Kubernetes' core/v1, apps/v1, discovery.k8s.io/v1 and networking.k8s.io/v1
/// objects that tagging needs, decoded from their real JSON or YAML. Unknown fields are ignored;
/// a field of the wrong type is an error (as the API server's decoder would report it).

public struct ObjectMeta: Codable, Sendable, Equatable {
  public var name: String?
  public var namespace: String?
  public var uid: String?
  public var resourceVersion: String?
  public var creationTimestamp: String?
  public var deletionTimestamp: String?
  public var labels: [String: String]?
  public var ownerReferences: [OwnerReference]?

  public init(name: String? = nil, namespace: String? = nil) {
    self.name = name
    self.namespace = namespace
  }
}

public struct OwnerReference: Codable, Sendable, Equatable {
  public var apiVersion: String?
  public var kind: String?
  public var name: String?
  public var uid: String?
  public var controller: Bool?
}

/// `intstr.IntOrString`: a port number or a named port.
public enum IntOrString: Codable, Sendable, Equatable, CustomStringConvertible {
  case int(Int)
  case string(String)

  public init(from decoder: Decoder) throws {
    let container = try decoder.singleValueContainer()
    if let value = try? container.decode(Int.self) {
      self = .int(value)
    } else {
      self = .string(try container.decode(String.self))
    }
  }

  public func encode(to encoder: Encoder) throws {
    var container = encoder.singleValueContainer()
    switch self {
    case .int(let value): try container.encode(value)
    case .string(let value): try container.encode(value)
    }
  }

  public var description: String {
    switch self {
    case .int(let value): String(value)
    case .string(let value): value
    }
  }
}

public struct ContainerPort: Codable, Sendable, Equatable {
  public var name: String?
  public var containerPort: Int?
  public var hostPort: Int?
  public var `protocol`: String?
}

public struct Container: Codable, Sendable, Equatable {
  public var name: String?
  public var image: String?
  public var ports: [ContainerPort]?
}

public struct Condition: Codable, Sendable, Equatable {
  public var type: String?
  public var status: String?
  public var reason: String?
}

public struct ContainerStatus: Codable, Sendable, Equatable {
  /// One of its fields is set: waiting (with a reason such as CrashLoopBackOff), running, or
  /// terminated (with the exit code and reason).
  public struct State: Codable, Sendable, Equatable {
    public struct Waiting: Codable, Sendable, Equatable {
      public var reason: String?
    }
    public struct Terminated: Codable, Sendable, Equatable {
      public var exitCode: Int?
      public var reason: String?
    }
    public var waiting: Waiting?
    public var terminated: Terminated?
  }
  public var name: String?
  public var ready: Bool?
  public var restartCount: Int?
  public var state: State?
  public var lastState: State?
}

public struct PodIP: Codable, Sendable, Equatable {
  public var ip: String?
}

public struct Pod: Codable, Sendable, Equatable {
  public struct Spec: Codable, Sendable, Equatable {
    public var nodeName: String?
    public var hostNetwork: Bool?
    public var containers: [Container]?
    public var initContainers: [Container]?
  }
  public struct Status: Codable, Sendable, Equatable {
    public var phase: String?
    public var podIP: String?
    public var podIPs: [PodIP]?
    public var hostIP: String?
    public var conditions: [Condition]?
    public var containerStatuses: [ContainerStatus]?
    public var initContainerStatuses: [ContainerStatus]?
  }
  public var metadata: ObjectMeta?
  public var spec: Spec?
  public var status: Status?

  public var ready: Bool { status?.conditions?.contains { $0.type == "Ready" && $0.status == "True" } ?? false }
  /// Every pod IP (podIPs, else podIP).
  public var ips: [String] {
    let listed = status?.podIPs?.compactMap(\.ip) ?? []
    return listed.isEmpty ? (status?.podIP.map { [$0] } ?? []) : listed
  }
  public var restarts: Int { status?.containerStatuses?.reduce(0) { $0 + ($1.restartCount ?? 0) } ?? 0 }
}

public struct ServicePortSpec: Codable, Sendable, Equatable {
  public var name: String?
  public var `protocol`: String?
  public var appProtocol: String?
  public var port: Int?
  public var targetPort: IntOrString?
  public var nodePort: Int?
}

public struct Service: Codable, Sendable, Equatable {
  public struct Spec: Codable, Sendable, Equatable {
    public var type: String?
    public var clusterIP: String?
    public var clusterIPs: [String]?
    public var externalIPs: [String]?
    public var externalName: String?
    public var selector: [String: String]?
    public var ports: [ServicePortSpec]?
  }
  public struct Status: Codable, Sendable, Equatable {
    public struct LoadBalancer: Codable, Sendable, Equatable {
      public struct Ingress: Codable, Sendable, Equatable {
        public var ip: String?
        public var hostname: String?
      }
      public var ingress: [Ingress]?
    }
    public var loadBalancer: LoadBalancer?
  }
  public var metadata: ObjectMeta?
  public var spec: Spec?
  public var status: Status?

  /// ClusterIPs other than `None` (headless).
  public var clusterIPs: [String] {
    let listed = spec?.clusterIPs ?? (spec?.clusterIP.map { [$0] } ?? [])
    return listed.filter { $0 != "None" && !$0.isEmpty }
  }
}

public struct ObjectReference: Codable, Sendable, Equatable {
  public var kind: String?
  public var namespace: String?
  public var name: String?
  public var uid: String?
}

public struct EndpointAddress: Codable, Sendable, Equatable {
  public var ip: String?
  public var hostname: String?
  public var nodeName: String?
  public var targetRef: ObjectReference?
}

public struct EndpointPort: Codable, Sendable, Equatable {
  public var name: String?
  public var port: Int?
  public var `protocol`: String?
  public var appProtocol: String?
}

public struct Endpoints: Codable, Sendable, Equatable {
  public struct Subset: Codable, Sendable, Equatable {
    public var addresses: [EndpointAddress]?
    public var notReadyAddresses: [EndpointAddress]?
    public var ports: [EndpointPort]?
  }
  public var metadata: ObjectMeta?
  public var subsets: [Subset]?
}

public struct EndpointSlice: Codable, Sendable, Equatable {
  public struct Endpoint: Codable, Sendable, Equatable {
    public struct Conditions: Codable, Sendable, Equatable {
      public var ready: Bool?
      public var serving: Bool?
      public var terminating: Bool?
    }
    public var addresses: [String]?
    public var conditions: Conditions?
    public var hostname: String?
    public var nodeName: String?
    public var zone: String?
    public var targetRef: ObjectReference?
  }
  public var metadata: ObjectMeta?
  public var addressType: String?
  public var endpoints: [Endpoint]?
  public var ports: [EndpointPort]?

  /// The Service the slice belongs to (label `kubernetes.io/service-name`).
  public var serviceName: String? { metadata?.labels?["kubernetes.io/service-name"] }
}

public struct NodeAddress: Codable, Sendable, Equatable {
  public var type: String?
  public var address: String?
}

public struct Node: Codable, Sendable, Equatable {
  public struct Spec: Codable, Sendable, Equatable {
    public var podCIDR: String?
    public var podCIDRs: [String]?
    public var unschedulable: Bool?
  }
  public struct Status: Codable, Sendable, Equatable {
    public var addresses: [NodeAddress]?
    public var conditions: [Condition]?
  }
  public var metadata: ObjectMeta?
  public var spec: Spec?
  public var status: Status?

  public var internalIPs: [String] { status?.addresses?.filter { $0.type == "InternalIP" }.compactMap(\.address) ?? [] }
  public var ready: Bool { status?.conditions?.contains { $0.type == "Ready" && $0.status == "True" } ?? false }
}

public struct Namespace: Codable, Sendable, Equatable {
  public var metadata: ObjectMeta?
}

public struct Ingress: Codable, Sendable, Equatable {
  public struct Backend: Codable, Sendable, Equatable {
    public struct ServiceBackend: Codable, Sendable, Equatable {
      public struct Port: Codable, Sendable, Equatable {
        public var number: Int?
        public var name: String?
      }
      public var name: String?
      public var port: Port?
    }
    public var service: ServiceBackend?
  }
  public struct Path: Codable, Sendable, Equatable {
    public var path: String?
    public var pathType: String?
    public var backend: Backend?
  }
  public struct Rule: Codable, Sendable, Equatable {
    public struct HTTP: Codable, Sendable, Equatable {
      public var paths: [Path]?
    }
    public var host: String?
    public var http: HTTP?
  }
  public struct Spec: Codable, Sendable, Equatable {
    public var ingressClassName: String?
    public var defaultBackend: Backend?
    public var rules: [Rule]?
  }
  public var metadata: ObjectMeta?
  public var spec: Spec?
}

/// Deployment, ReplicaSet, DaemonSet, StatefulSet, Job, CronJob: what links pods to workloads.
public struct Workload: Codable, Sendable, Equatable {
  public struct Spec: Codable, Sendable, Equatable {
    public struct Selector: Codable, Sendable, Equatable {
      public var matchLabels: [String: String]?
    }
    public var replicas: Int?
    public var selector: Selector?
  }
  public var metadata: ObjectMeta?
  public var spec: Spec?
}

/// One decoded object.
public enum KubeObject: Sendable, Equatable {
  case pod(Pod)
  case service(Service)
  case endpoints(Endpoints)
  case endpointSlice(EndpointSlice)
  case node(Node)
  case namespace(Namespace)
  case ingress(Ingress)
  case workload(kind: String, Workload)
  /// A kind tagging does not use (Secret, ConfigMap, ...), kept by name only.
  case other(kind: String, ObjectMeta?)

  public var kind: String {
    switch self {
    case .pod: "Pod"
    case .service: "Service"
    case .endpoints: "Endpoints"
    case .endpointSlice: "EndpointSlice"
    case .node: "Node"
    case .namespace: "Namespace"
    case .ingress: "Ingress"
    case .workload(let kind, _): kind
    case .other(let kind, _): kind
    }
  }

  public var metadata: ObjectMeta? {
    switch self {
    case .pod(let object): object.metadata
    case .service(let object): object.metadata
    case .endpoints(let object): object.metadata
    case .endpointSlice(let object): object.metadata
    case .node(let object): object.metadata
    case .namespace(let object): object.metadata
    case .ingress(let object): object.metadata
    case .workload(_, let object): object.metadata
    case .other(_, let meta): meta
    }
  }

  /// `Kind/namespace/name`, the identity used across versions of the object.
  public var key: String { "\(kind)/\(metadata?.namespace ?? "")/\(metadata?.name ?? "")" }
}
