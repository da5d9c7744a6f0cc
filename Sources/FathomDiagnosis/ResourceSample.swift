/// A node's or pod's resource figures at one instant, as the lab samples them from cgroups and
/// the interfaces (kubelet's and cAdvisor's figures): its state, and counters that grow from
/// the start of the container or interface.
public struct ResourceSample: Sendable, Equatable, Decodable {
  public enum Kind: String, Sendable, Decodable {
    case node
    case pod
  }

  /// RFC 3339, as written.
  public var time: String
  public var kind: Kind
  /// Empty for nodes.
  public var namespace: String
  public var name: String
  public var ready: Bool
  public var restarts: Int
  public var oomKills: Int
  public var cpuPeriods: Int
  public var cpuThrottledPeriods: Int
  /// By interface name: a pod's own interface, a node's every interface.
  public var interfaces: [String: InterfaceCounters]

  public init(
    time: String, kind: Kind, namespace: String = "", name: String, ready: Bool = true, restarts: Int = 0,
    oomKills: Int = 0, cpuPeriods: Int = 0, cpuThrottledPeriods: Int = 0, interfaces: [String: InterfaceCounters] = [:]
  ) {
    self.time = time
    self.kind = kind
    self.namespace = namespace
    self.name = name
    self.ready = ready
    self.restarts = restarts
    self.oomKills = oomKills
    self.cpuPeriods = cpuPeriods
    self.cpuThrottledPeriods = cpuThrottledPeriods
    self.interfaces = interfaces
  }

  enum CodingKeys: String, CodingKey {
    case time, kind, namespace, name, ready, restarts, interface, interfaces
    case oomKills = "oom_kills"
    case cpuPeriods = "cpu_periods"
    case cpuThrottledPeriods = "cpu_throttled_periods"
    case rxPackets = "rx_packets"
  }

  /// Counters a sample lacks (a pod without a cgroup yet, a node without interface figures)
  /// read as zero; the identity and time are required.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    time = try container.decode(String.self, forKey: .time)
    kind = try container.decode(Kind.self, forKey: .kind)
    namespace = try container.decodeIfPresent(String.self, forKey: .namespace) ?? ""
    name = try container.decode(String.self, forKey: .name)
    ready = try container.decodeIfPresent(Bool.self, forKey: .ready) ?? true
    restarts = try container.count(.restarts)
    oomKills = try container.count(.oomKills)
    cpuPeriods = try container.count(.cpuPeriods)
    cpuThrottledPeriods = try container.count(.cpuThrottledPeriods)
    // A node lists its interfaces; a pod's one interface's counters are top-level fields.
    if let all = try container.decodeIfPresent([String: InterfaceCounters].self, forKey: .interfaces) {
      interfaces = all
    } else if container.contains(.rxPackets) {
      let name = try container.decodeIfPresent(String.self, forKey: .interface) ?? "eth0"
      interfaces = [name: try InterfaceCounters(from: decoder)]
    } else {
      interfaces = [:]
    }
  }

  /// `node/NAME` or `pod/NAMESPACE/NAME`.
  public var key: String { kind == .node ? "node/\(name)" : "pod/\(namespace)/\(name)" }
}

/// An interface's packet counters (`/proc/net/dev`), cumulative.
public struct InterfaceCounters: Sendable, Equatable, Decodable {
  public var rxPackets: Int
  public var txPackets: Int
  public var rxDropped: Int
  public var txDropped: Int

  public init(rxPackets: Int = 0, txPackets: Int = 0, rxDropped: Int = 0, txDropped: Int = 0) {
    self.rxPackets = rxPackets
    self.txPackets = txPackets
    self.rxDropped = rxDropped
    self.txDropped = txDropped
  }

  enum CodingKeys: String, CodingKey {
    case rxPackets = "rx_packets"
    case txPackets = "tx_packets"
    case rxDropped = "rx_dropped"
    case txDropped = "tx_dropped"
  }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    rxPackets = try container.count(.rxPackets)
    txPackets = try container.count(.txPackets)
    rxDropped = try container.count(.rxDropped)
    txDropped = try container.count(.txDropped)
  }

  public var packets: Int { rxPackets + txPackets }
  public var dropped: Int { rxDropped + txDropped }
}

extension KeyedDecodingContainer {
  /// A cumulative counter the sample may lack: zero then.
  fileprivate func count(_ key: Key) throws -> Int { try decodeIfPresent(Int.self, forKey: key) ?? 0 }
}
