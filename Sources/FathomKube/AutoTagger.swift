import FathomRecords

/// Where a record was observed, in DeepFlow's terms (REFERENCE.md, "Observation points").
public enum ObservationPoint: String, Sendable, CaseIterable {
  case client = "c"
  case clientNode = "c-nd"
  case serverNode = "s-nd"
  case server = "s"
  case local
  case rest

  /// Rank for ordering a request's spans along its path.
  public var rank: Int {
    switch self {
    case .client: 2
    case .clientNode: 3
    case .serverNode: 10
    case .server: 11
    case .local, .rest: 13
    }
  }
}

/// What tagging knows about the place a capture was taken.
public struct CapturePoint: Sendable {
  /// The node the capture ran on (nil: unknown, observation points are `rest`).
  public var node: String?
  /// Capture interface ids as records name them (`ifindex:3`) → interface names.
  public var interfaceNames: [String: String] = [:]
  /// Interface name → `namespace/pod` behind it (a pod veth's host end).
  public var podInterfaces: [String: String] = [:]

  public init(node: String?) { self.node = node }
}

/// The tags of one record: both ends, where it was seen, and the links tagging can make.
public struct RecordTags: Sendable, Equatable {
  public var client: EndpointIdentity = .external
  public var server: EndpointIdentity = .external
  public var observationPoint: ObservationPoint = .rest
  public var captureNode: Int32 = 0
  public var interface: String = ""
  /// The Ingress whose rule an ingress controller's inbound request matched.
  public var ingress: Int32 = 0
  /// For a connection to a ClusterIP or NodePort: the pod that answered, where the same
  /// connection was also seen after DNAT.
  public var answeredBy: Int32 = 0
  /// For a connection seen after DNAT: the Service the client asked for.
  public var requestedService: Int32 = 0

  public init() {}
}

public struct TaggedFlow: Sendable {
  public var flow: FlowLog
  public var tags: RecordTags
  public init(flow: FlowLog, tags: RecordTags) {
    self.flow = flow
    self.tags = tags
  }
}

public struct TaggedRequest: Sendable {
  public var request: RequestLog
  public var tags: RecordTags
  public init(request: RequestLog, tags: RecordTags) {
    self.request = request
    self.tags = tags
  }
}

/// AutoTagging: both ends of every FlowLog and RequestLog from the cluster index at the record's
/// time, the observation point from the capture point, the Ingress rule for requests into an
/// ingress controller, and the Service ↔ answering-pod link across DNAT.
public struct AutoTagger: Sendable {
  public let index: ClusterIndex

  public init(index: ClusterIndex) { self.index = index }

  public func tags(
    clientIP: IPAddress, clientPort: UInt16, serverIP: IPAddress, serverPort: UInt16, transport: String,
    interface: String, at micros: Int64, point: CapturePoint
  ) -> RecordTags {
    var tags = RecordTags()
    let client = clientIP.description
    let server = serverIP.description
    tags.client = index.identify(ip: client, port: clientPort, transport: transport, at: micros, asServer: false)
    tags.server = index.identify(ip: server, port: serverPort, transport: transport, at: micros, asServer: true)
    let name = point.interfaceNames[interface] ?? interface
    tags.interface = name
    guard let nodeName = point.node, let node = index.nodeID(named: nodeName) else { return tags }
    tags.captureNode = node
    if name == "lo" {
      tags.observationPoint = .local
    } else if let podKey = point.podInterfaces[name] {
      // A pod's veth: the pod behind it is the client or the server of what crosses it.
      let clientPod = index.resource(tags.client.pod).map { "\($0.namespace)/\($0.name)" }
      let serverPod = index.resource(tags.server.pod).map { "\($0.namespace)/\($0.name)" }
      tags.observationPoint = clientPod == podKey ? .client : serverPod == podKey ? .server : .rest
    } else {
      let clientLocal = index.isLocal(ip: client, node: node, at: micros)
      let serverLocal = index.isLocal(ip: server, node: node, at: micros)
      let isPodInterface = name.hasPrefix("veth") || name.hasPrefix("cali") || name.hasPrefix("lxc")
      // A hostNetwork pod's own interface is the node's: its end is `c`/`s`, not the node's.
      let serverIsHostPod = tags.server.kind == .pod && index.isNodeAddress(ip: server, node: node, at: micros)
      if isPodInterface {
        tags.observationPoint = tags.client.kind == .pod && clientLocal ? .client : serverLocal ? .server : .rest
      } else if serverIsHostPod && !clientLocal {
        tags.observationPoint = .server
      } else if clientLocal && !serverLocal {
        tags.observationPoint = .clientNode
      } else if serverLocal && !clientLocal {
        tags.observationPoint = .serverNode
      } else if clientLocal && serverLocal {
        tags.observationPoint = .local
      } else {
        tags.observationPoint = .rest
      }
    }
    return tags
  }

  public func tag(_ flow: FlowLog, point: CapturePoint) -> TaggedFlow {
    let tags = tags(
      clientIP: flow.clientIP, clientPort: flow.clientPort, serverIP: flow.serverIP, serverPort: flow.serverPort,
      transport: flow.l4Protocol == .udp ? "UDP" : "TCP", interface: flow.interface, at: flow.startMicros, point: point)
    return TaggedFlow(flow: flow, tags: tags)
  }

  public func tag(_ request: RequestLog, point: CapturePoint) -> TaggedRequest {
    var tags = tags(
      clientIP: request.clientIP, clientPort: request.clientPort, serverIP: request.serverIP,
      serverPort: request.serverPort, transport: request.applicationProtocol == .dns ? "UDP" : "TCP",
      interface: request.interface, at: request.startMicros, point: point)
    if tags.server.kind == .pod, index.isIngressController(pod: tags.server.pod, at: request.startMicros),
      request.applicationProtocol == .http || request.applicationProtocol == .http2,
      let rule = index.ingressRule(host: request.domain, path: request.resource, at: request.startMicros)
    {
      tags.ingress = rule.ingress
    }
    return TaggedRequest(request: request, tags: tags)
  }
}
