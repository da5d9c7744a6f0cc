/// One Service port as kube-proxy programs it: what clients ask for and the ready endpoints.
public struct ServicePortRule: Sendable, Equatable {
  public var namespace: String
  public var service: String
  public var portName: String?
  /// `TCP` or `UDP`.
  public var transport: String
  public var clusterIP: String
  public var port: Int
  public var nodePort: Int?
  /// Ready endpoints (`ip`, `port`); empty → REJECT, as kube-proxy does.
  public var endpoints: [Endpoint]

  public struct Endpoint: Sendable, Equatable {
    public var ip: String
    public var port: Int
    public init(ip: String, port: Int) {
      self.ip = ip
      self.port = port
    }
  }

  public init(
    namespace: String, service: String, portName: String?, transport: String, clusterIP: String, port: Int,
    nodePort: Int?, endpoints: [Endpoint]
  ) {
    self.namespace = namespace
    self.service = service
    self.portName = portName
    self.transport = transport
    self.clusterIP = clusterIP
    self.port = port
    self.nodePort = nodePort
    self.endpoints = endpoints
  }

  /// kube-proxy's `ServicePortName.String()`: `ns/name:port` (`ns/name` for an unnamed port).
  public var servicePortName: String {
    if let portName, !portName.isEmpty { return "\(namespace)/\(service):\(portName)" }
    return "\(namespace)/\(service)"
  }

  var lowerTransport: String { transport.lowercased() }
}

/// kube-proxy's iptables mode, rendered as `iptables-restore` input for one node: the chain names,
/// rule order, comments, marks and probabilities of kube-proxy's proxier (REFERENCE.md,
/// "Kubernetes facts"). The lab applies it to each node's network namespace whenever endpoints
/// change.
public enum KubeProxyRules {
  public static let masqueradeMark = "0x4000"

  /// `KUBE-SVC-` + base32(sha256(servicePortName + protocol))[0..<16], protocol in lower case.
  public static func serviceChain(_ rule: ServicePortRule) -> String {
    "KUBE-SVC-" + hashSuffix(rule.servicePortName + rule.lowerTransport)
  }

  /// `KUBE-EXT-` with the service chain's hash: NodePort traffic enters here.
  public static func externalChain(_ rule: ServicePortRule) -> String {
    "KUBE-EXT-" + hashSuffix(rule.servicePortName + rule.lowerTransport)
  }

  /// `KUBE-SEP-` + base32(sha256(servicePortName + protocol + "ip:port"))[0..<16].
  public static func endpointChain(_ rule: ServicePortRule, _ endpoint: ServicePortRule.Endpoint) -> String {
    "KUBE-SEP-" + hashSuffix(rule.servicePortName + rule.lowerTransport + "\(endpoint.ip):\(endpoint.port)")
  }

  static func hashSuffix(_ text: String) -> String {
    String(SHA256.base32(SHA256.digest(Array(text.utf8))).prefix(16))
  }

  /// kube-proxy writes 1/n with ten decimals.
  static func probability(_ remaining: Int) -> String {
    let value = 1.0 / Double(remaining)
    let scaled = (value * 10_000_000_000).rounded()
    let whole = Int(scaled) / 10_000_000_000
    let fraction = String(Int(scaled) % 10_000_000_000)
    return "\(whole)." + String(repeating: "0", count: 10 - fraction.count) + fraction
  }

  /// The filter and nat tables for one node. `clusterCIDR` is the pod network (traffic to a
  /// ClusterIP from outside it is masqueraded, as kube-proxy's `--cluster-cidr` does).
  public static func render(_ rules: [ServicePortRule], clusterCIDR: String) -> String {
    var filter: [String] = []
    var nat: [String] = []
    var natChains: [String] = []

    for rule in rules {
      let comment = rule.servicePortName
      let proto = "-m \(rule.lowerTransport) -p \(rule.lowerTransport)"
      if rule.endpoints.isEmpty {
        filter.append(
          "-A KUBE-SERVICES -m comment --comment \"\(comment) has no endpoints\" \(proto) -d \(rule.clusterIP) --dport \(rule.port) -j REJECT"
        )
        if let nodePort = rule.nodePort {
          filter.append(
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"\(comment) has no endpoints\" -m addrtype --dst-type LOCAL \(proto) --dport \(nodePort) -j REJECT"
          )
        }
        continue
      }
      let serviceChain = serviceChain(rule)
      natChains.append(serviceChain)
      nat.append(
        "-A KUBE-SERVICES -m comment --comment \"\(comment) cluster IP\" \(proto) -d \(rule.clusterIP) --dport \(rule.port) -j \(serviceChain)"
      )
      nat.append(
        "-A \(serviceChain) -m comment --comment \"\(comment) cluster IP\" \(proto) -d \(rule.clusterIP) --dport \(rule.port) ! -s \(clusterCIDR) -j KUBE-MARK-MASQ"
      )
      if let nodePort = rule.nodePort {
        let externalChain = externalChain(rule)
        natChains.append(externalChain)
        nat.append("-A KUBE-NODEPORTS -m comment --comment \(comment) \(proto) --dport \(nodePort) -j \(externalChain)")
        nat.append(
          "-A \(externalChain) -m comment --comment \"masquerade traffic for \(comment) external destinations\" -j KUBE-MARK-MASQ"
        )
        nat.append("-A \(externalChain) -j \(serviceChain)")
      }
      for (index, endpoint) in rule.endpoints.enumerated() {
        let endpointChain = endpointChain(rule, endpoint)
        let remaining = rule.endpoints.count - index
        let pick = remaining > 1 ? " -m statistic --mode random --probability \(probability(remaining))" : ""
        nat.append(
          "-A \(serviceChain) -m comment --comment \"\(comment) -> \(endpoint.ip):\(endpoint.port)\"\(pick) -j \(endpointChain)"
        )
      }
      for endpoint in rule.endpoints {
        let endpointChain = endpointChain(rule, endpoint)
        natChains.append(endpointChain)
        nat.append("-A \(endpointChain) -m comment --comment \(comment) -s \(endpoint.ip) -j KUBE-MARK-MASQ")
        nat.append(
          "-A \(endpointChain) -m comment --comment \(comment) \(proto) -j DNAT --to-destination \(endpoint.ip):\(endpoint.port)"
        )
      }
    }
    nat.append(
      "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    )

    var text = "*filter\n"
    for chain in ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS"] {
      text += ":\(chain) - [0:0]\n"
    }
    text += """
      -A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
      -A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
      -A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
      -A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
      -A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
      -A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
      -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
      -A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark \(masqueradeMark)/\(masqueradeMark) -j ACCEPT
      -A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT

      """
    text += filter.map { $0 + "\n" }.joined()
    text += "COMMIT\n*nat\n"
    for chain in ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"] + natChains {
      text += ":\(chain) - [0:0]\n"
    }
    text += """
      -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
      -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
      -A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
      -A KUBE-POSTROUTING -m mark ! --mark \(masqueradeMark)/\(masqueradeMark) -j RETURN
      -A KUBE-POSTROUTING -j MARK --xor-mark \(masqueradeMark)
      -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
      -A KUBE-MARK-MASQ -j MARK --or-mark \(masqueradeMark)

      """
    text += nat.map { $0 + "\n" }.joined()
    text += "COMMIT\n"
    return text
  }
}
