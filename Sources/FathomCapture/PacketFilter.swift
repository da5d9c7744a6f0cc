import CPcap

/// A BPF filter (tcpdump syntax) compiled by libpcap and applied to packets of any source.
/// One program is compiled per link type, lazily, because pcapng interfaces may differ.
public final class PacketFilter {
  public let expression: String
  private var programs: [UInt32: bpf_program] = [:]

  /// Compiles `expression` once for Ethernet to report syntax errors before any packet is read.
  public init(expression: String) throws {
    self.expression = expression
    _ = try program(for: 1)
  }

  deinit {
    for key in programs.keys { pcap_freecode(&programs[key]!) }
  }

  private func program(for linkType: UInt32) throws -> bpf_program {
    if let program = programs[linkType] { return program }
    guard let handle = pcap_open_dead(Int32(linkType), 262_144) else {
      throw CaptureError.filter(expression: expression, reason: "libpcap could not open a dead handle")
    }
    defer { pcap_close(handle) }
    var program = bpf_program()
    guard pcap_compile(handle, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
      throw CaptureError.filter(expression: expression, reason: String(cString: pcap_geterr(handle)))
    }
    programs[linkType] = program
    return program
  }

  /// True when the packet passes; a filter that cannot compile for this link type rejects it.
  public func matches(_ header: PacketHeader, _ bytes: UnsafeRawBufferPointer) -> Bool {
    guard var program = try? program(for: header.linkType), let start = bytes.baseAddress else { return false }
    var pcapHeader = pcap_pkthdr()
    pcapHeader.caplen = UInt32(header.capturedLength)
    pcapHeader.len = UInt32(header.wireLength)
    return pcap_offline_filter(&program, &pcapHeader, start.assumingMemoryBound(to: UInt8.self)) != 0
  }
}
