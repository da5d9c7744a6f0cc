extension OutputBuffer {
  /// Appends each record as a JSON line, reading records where they lie (see the RequestLog
  /// form: a record passed on from memory was copied).
  public mutating func appendJSONLines(_ flows: UnsafeBufferPointer<FlowLog>) {
    guard let base = flows.baseAddress else { return }
    for index in flows.indices { appendJSONLine(at: base + index) }
  }

  /// Appends one FlowLog as a JSON object on one line (the `jsonl` format of docs/records.md).
  public mutating func appendJSONLine(_ flow: borrowing FlowLog) {
    withUnsafePointer(to: flow) { appendJSONLine(at: $0) }
  }

  private mutating func appendJSONLine(at flow: UnsafePointer<FlowLog>) {
    append("{\"start_us\":")
    append(flow.pointee.startMicros)
    append(",\"end_us\":")
    append(flow.pointee.endMicros)
    append(",\"protocol\":\"")
    append(flow.pointee.l4Protocol.name)
    append("\",\"client_ip\":\"")
    append(flow.pointee.clientIP)
    append("\",\"client_port\":")
    append(UInt64(flow.pointee.clientPort))
    append(",\"server_ip\":\"")
    append(flow.pointee.serverIP)
    append("\",\"server_port\":")
    append(UInt64(flow.pointee.serverPort))
    append(",\"orientation\":\"")
    append(flow.pointee.orientationGuessed ? "guessed" : "handshake")
    append("\",\"interface\":")
    appendJSONString(flow.pointee.interface)
    append(",\"netns\":")
    appendJSONString(flow.pointee.netns)
    append(",\"vlan\":")
    append(UInt64(flow.pointee.vlan))
    append(",\"tunnel_id\":")
    if let tunnel = flow.pointee.tunnelID { append(UInt64(tunnel)) } else { append("null") }
    let c2s = flow.pointee.clientToServer
    let s2c = flow.pointee.serverToClient
    append(",\"packets_c2s\":")
    append(c2s.packets)
    append(",\"packets_s2c\":")
    append(s2c.packets)
    append(",\"bytes_c2s\":")
    append(c2s.l3Bytes)
    append(",\"bytes_s2c\":")
    append(s2c.l3Bytes)
    append(",\"frame_bytes_c2s\":")
    append(c2s.frameBytes)
    append(",\"frame_bytes_s2c\":")
    append(s2c.frameBytes)
    append(",\"payload_c2s\":")
    append(c2s.payloadBytes)
    append(",\"payload_s2c\":")
    append(s2c.payloadBytes)
    append(",\"unique_payload_c2s\":")
    append(c2s.uniquePayloadBytes)
    append(",\"unique_payload_s2c\":")
    append(s2c.uniquePayloadBytes)
    append(",\"close_type\":\"")
    append(flow.pointee.closeType.name)
    append("\",\"status\":\"")
    append(flow.pointee.status.name)
    append("\",\"rtt_client_us\":")
    append(UInt64(flow.pointee.rttClientMicros))
    append(",\"rtt_server_us\":")
    append(UInt64(flow.pointee.rttServerMicros))
    append(",\"rtt_us\":")
    append(UInt64(flow.pointee.rttMicros))
    appendStats("srt", flow.pointee.srt)
    appendStats("art", flow.pointee.art)
    appendStats("cit", flow.pointee.cit)
    append(",\"retrans_c2s\":")
    append(UInt64(c2s.retransmissions))
    append(",\"retrans_s2c\":")
    append(UInt64(s2c.retransmissions))
    append(",\"ooo_c2s\":")
    append(UInt64(c2s.outOfOrder))
    append(",\"ooo_s2c\":")
    append(UInt64(s2c.outOfOrder))
    append(",\"zero_win_c2s\":")
    append(UInt64(c2s.zeroWindows))
    append(",\"zero_win_s2c\":")
    append(UInt64(s2c.zeroWindows))
    append(",\"syn_count\":")
    append(UInt64(flow.pointee.synCount))
    append(",\"synack_count\":")
    append(UInt64(flow.pointee.synAckCount))
    append(",\"syn_retrans\":")
    append(UInt64(flow.pointee.synRetransmissions))
    append(",\"synack_retrans\":")
    append(UInt64(flow.pointee.synAckRetransmissions))
    append(",\"fin_c2s\":")
    append(UInt64(c2s.fins))
    append(",\"fin_s2c\":")
    append(UInt64(s2c.fins))
    append(",\"rst_c2s\":")
    append(UInt64(c2s.rsts))
    append(",\"rst_s2c\":")
    append(UInt64(s2c.rsts))
    append(",\"icmp_unreachable\":")
    if let icmp = flow.pointee.icmpUnreachable {
      append("{\"type\":")
      append(UInt64(icmp.type))
      append(",\"code\":")
      append(UInt64(icmp.code))
      append("}")
    } else {
      append("null")
    }
    append(",\"report_index\":")
    append(UInt64(flow.pointee.reportIndex))
    append(",\"flow_id\":")
    append(flow.pointee.flowID)
    append(",\"l7_protocol\":")
    if let l7 = flow.pointee.applicationProtocol {
      append("\"")
      append(l7.name)
      append("\"")
    } else {
      append("null")
    }
    let app = flow.pointee.application
    append(",\"l7_requests\":")
    append(UInt64(app.requests))
    append(",\"l7_responses\":")
    append(UInt64(app.responses))
    append(",\"l7_client_errors\":")
    append(UInt64(app.clientErrors))
    append(",\"l7_server_errors\":")
    append(UInt64(app.serverErrors))
    append(",\"l7_timeouts\":")
    append(UInt64(app.timeouts))
    append(",\"l7_unknown\":")
    append(UInt64(app.unknown))
    append("}\n")
  }

  private mutating func appendStats(_ name: StaticString, _ stats: LatencyStats) {
    append(",\"")
    append(name)
    append("_sum_us\":")
    append(stats.sumMicros)
    append(",\"")
    append(name)
    append("_count\":")
    append(UInt64(stats.count))
    append(",\"")
    append(name)
    append("_max_us\":")
    append(UInt64(stats.maxMicros))
  }
}

/// Writes FlowLogs as an aligned human table, one line per flow.
public enum FlowTable {
  public static let header =
    "PROTO  CLIENT                                  SERVER                                  PKTS c>s/s<c     BYTES c>s/s<c         CLOSE                     STATUS        RTT ms   ART ms  RETX  ZWIN\n"

  public static func appendRow(_ flow: FlowLog, to out: inout OutputBuffer) {
    out.appendPadded(flow.l4Protocol.description, width: 7)
    out.appendPaddedEndpoint(flow.clientIP, flow.clientPort, marker: flow.orientationGuessed ? "?" : "", width: 40)
    out.appendPaddedEndpoint(flow.serverIP, flow.serverPort, width: 40)
    out.appendPadded("\(flow.clientToServer.packets)/\(flow.serverToClient.packets)", width: 17)
    out.appendPadded("\(flow.clientToServer.l3Bytes)/\(flow.serverToClient.l3Bytes)", width: 22)
    out.appendPadded(flow.closeType.rawValue, width: 26)
    out.appendPadded(flow.status.rawValue, width: 13)
    out.appendPadded(TableCell.millis(flow.rttMicros), width: 8, alignRight: true)
    out.appendPadded(
      flow.art.count == 0 ? "-" : TableCell.millis(flow.art.meanMicros), width: 9, alignRight: true)
    let retrans = flow.clientToServer.retransmissions + flow.serverToClient.retransmissions
    out.appendPadded("\(retrans)", width: 6, alignRight: true)
    let zeroWindows = flow.clientToServer.zeroWindows + flow.serverToClient.zeroWindows
    out.appendPadded("\(zeroWindows)", width: 6, alignRight: true)
    out.append(byte: 10)
  }
}

/// Cell text shared by the human tables.
enum TableCell {
  /// Milliseconds with two decimals ("12.05"), or "-" when nothing was measured.
  static func millis<Micros: BinaryInteger>(_ micros: Micros) -> String {
    if micros <= 0 { return "-" }
    let whole = micros / 1000
    let fraction = (micros % 1000) / 10
    return "\(whole)." + (fraction < 10 ? "0" : "") + "\(fraction)"
  }
}
