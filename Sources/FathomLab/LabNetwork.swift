import Foundation

/// Builds and removes the lab's kernel networking: a fabric namespace with a bridge joining the
/// nodes, the external client and the external DNS server; per node a namespace with an uplink
/// (eth0) and a `cni0` bridge; per pod a namespace with a veth into its node's bridge. Pod subnets
/// are routed between nodes via the node IPs (host-gw). Nothing is routed to or from the root
/// namespace.
public enum LabNetwork {
  static let fabricBridge = "br-fabric"

  public static func build(_ plan: LabPlan) throws {
    try addNamespace(LabPlan.fabricNamespace)
    try Shell.run(["ip", "-n", LabPlan.fabricNamespace, "link", "add", fabricBridge, "type", "bridge"])
    try Shell.run(["ip", "-n", LabPlan.fabricNamespace, "link", "set", fabricBridge, "up"])

    for node in plan.nodes {
      try addNamespace(node.netns)
      try sysctl(node.netns, ["net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"])
      try uplink(namespace: node.netns, fabricPort: node.fabricPort, address: "\(node.ip)/24")
      try Shell.run(["ip", "-n", node.netns, "link", "add", "cni0", "type", "bridge"])
      try Shell.run(["ip", "-n", node.netns, "addr", "add", "\(node.bridgeIP)/24", "dev", "cni0"])
      try Shell.run(["ip", "-n", node.netns, "link", "set", "cni0", "up"])
      for other in plan.nodes where other.name != node.name {
        try Shell.run(["ip", "-n", node.netns, "route", "add", other.podCIDR, "via", other.ip])
      }
      // ClusterIPs have no owner: without a route, packets to a ClusterIP without a DNAT rule
      // (a Service with no endpoints) would die in routing before kube-proxy's REJECT sees them.
      try Shell.run(["ip", "-n", node.netns, "route", "add", plan.serviceCIDR, "dev", "eth0"])
      try resolvConf(node.netns, nameservers: [plan.externalDNSIP], search: [], ndots: nil)
    }

    try addNamespace(LabPlan.clientNamespace)
    try uplink(namespace: LabPlan.clientNamespace, fabricPort: "fl-client0", address: "\(plan.clientIP)/24")
    try resolvConf(LabPlan.clientNamespace, nameservers: [plan.externalDNSIP], search: [], ndots: nil)
    try addNamespace(LabPlan.externalDNSNamespace)
    try uplink(namespace: LabPlan.externalDNSNamespace, fabricPort: "fl-extdns0", address: "\(plan.externalDNSIP)/24")

    for pod in plan.pods where !pod.hostNetwork {
      try addPod(pod, plan: plan)
    }
  }

  static func addPod(_ pod: LabPlan.PodPlan, plan: LabPlan) throws {
    let node = plan.node(named: pod.node)!
    try addNamespace(pod.netns)
    try Shell.run([
      "ip", "-n", node.netns, "link", "add", pod.hostVeth, "type", "veth", "peer", "name", "eth0", "netns", pod.netns,
    ])
    try Shell.run(["ip", "-n", node.netns, "link", "set", pod.hostVeth, "master", "cni0"])
    // The bridge CNI plugin sets hairpin mode, so a pod can reach itself through its Service.
    try Shell.run(["ip", "-n", node.netns, "link", "set", pod.hostVeth, "type", "bridge_slave", "hairpin", "on"])
    try Shell.run(["ip", "-n", node.netns, "link", "set", pod.hostVeth, "up"])
    try Shell.run(["ip", "-n", pod.netns, "addr", "add", "\(pod.ip)/24", "dev", "eth0"])
    try Shell.run(["ip", "-n", pod.netns, "link", "set", "eth0", "up"])
    try Shell.run(["ip", "-n", pod.netns, "route", "add", "default", "via", node.bridgeIP])
    try wireSizedSegments(node.netns, pod.hostVeth)
    try wireSizedSegments(pod.netns, "eth0")
    let domain = plan.topology.cluster.domain
    try resolvConf(
      pod.netns, nameservers: [plan.topology.cluster.dnsServiceIP],
      search: ["\(pod.namespace).svc.\(domain)", "svc.\(domain)", domain], ndots: 5)
  }

  /// A namespace with loopback up and IPv6 off (no router solicitations in the captures).
  static func addNamespace(_ name: String) throws {
    try Shell.run(["ip", "netns", "add", name])
    try Shell.run(["ip", "-n", name, "link", "set", "lo", "up"])
    try sysctl(name, ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
  }

  static func uplink(namespace: String, fabricPort: String, address: String) throws {
    try Shell.run([
      "ip", "-n", LabPlan.fabricNamespace, "link", "add", fabricPort, "type", "veth", "peer", "name", "eth0", "netns",
      namespace,
    ])
    try Shell.run(["ip", "-n", LabPlan.fabricNamespace, "link", "set", fabricPort, "master", fabricBridge])
    try Shell.run(["ip", "-n", LabPlan.fabricNamespace, "link", "set", fabricPort, "up"])
    try Shell.run(["ip", "-n", namespace, "addr", "add", address, "dev", "eth0"])
    try Shell.run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
    try wireSizedSegments(namespace, "eth0")
  }

  static func sysctl(_ namespace: String, _ settings: [String]) throws {
    try Shell.inNamespace(namespace, ["sysctl", "-q", "-w"] + settings)
  }

  /// Segmentation offloads off, so captures hold the segments the wire would carry.
  static func wireSizedSegments(_ namespace: String, _ interface: String) throws {
    _ = try? Shell.inNamespace(namespace, ["ethtool", "-K", interface, "tso", "off", "gso", "off", "gro", "off"])
  }

  /// /etc/netns/NAME/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf.
  static func resolvConf(_ namespace: String, nameservers: [String], search: [String], ndots: Int?) throws {
    var text = nameservers.map { "nameserver \($0)\n" }.joined()
    if !search.isEmpty { text += "search \(search.joined(separator: " "))\n" }
    if let ndots { text += "options ndots:\(ndots)\n" }
    try Files.makeDirectory("/etc/netns/\(namespace)")
    try Files.write(text, to: "/etc/netns/\(namespace)/resolv.conf")
  }

  /// Lab namespaces that exist now.
  public static func namespaces() -> [String] {
    let listing = (try? Shell.run(["ip", "netns", "list"])) ?? ""
    return listing.split(separator: "\n").compactMap { line in
      let name = String(line.split(separator: " ").first ?? "")
      return name.hasPrefix(LabPlan.namespacePrefix) ? name : nil
    }
  }

  /// Kills every process in a lab namespace and removes the namespaces and their resolv.conf
  /// directories. Safe to run when nothing (or half a lab) exists.
  public static func teardown() {
    let names = namespaces()
    for _ in 0..<3 {
      var any = false
      for name in names {
        let pids = ((try? Shell.run(["ip", "netns", "pids", name])) ?? "").split(separator: "\n").compactMap {
          Int32($0)
        }
        for pid in pids {
          kill(pid, SIGKILL)
          any = true
        }
      }
      if !any { break }
      usleep(100_000)
    }
    for name in names {
      Shell.attempt(["ip", "netns", "del", name])
    }
    if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/etc/netns") {
      for entry in entries where entry.hasPrefix(LabPlan.namespacePrefix) {
        try? FileManager.default.removeItem(atPath: "/etc/netns/\(entry)")
      }
    }
  }
}
