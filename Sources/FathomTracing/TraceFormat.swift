import FathomStore
import Foundation

extension Trace {
  var startMicros: Int64 { spans.map(\.request.startMicros).min() ?? 0 }
  var endMicros: Int64 { spans.map(\.request.endMicros).max() ?? 0 }

  /// An indented waterfall: one line per span with where it was seen, what it was, a bar on the
  /// trace's time axis, its duration and self time; then the slowest segment and break point.
  public func waterfall(width: Int = 32) -> String {
    let start = startMicros
    let total = max(1, endMicros - start)
    var text = String(format: "%d spans, %.2f ms", spans.count, Double(total) / 1000)
    if noDNSSeen {
      text +=
        "; no DNS seen: no captured lookup answered the address the client used (direct IP access, or a resolver outside the captures)"
    }
    text += "\n"
    for span in spans {
      let request = span.request
      let indent = String(repeating: "  ", count: span.depth)
      let point = "\(request.observationPoint.padding(toLength: 4, withPad: " ", startingAt: 0)) \(request.node)"
      let client = request.clientPod.isEmpty ? request.clientIP : request.clientPod
      let server =
        request.serverPod.isEmpty
        ? (request.serverService.isEmpty
          ? "\(request.serverIP):\(request.serverPort)"
          : "\(request.serverService) (\(request.serverIP):\(request.serverPort))")
        : request.serverPod
      let what: String
      switch span.kind {
      case .dns:
        let rcode =
          request.code.map { [0: "NOERROR", 3: "NXDOMAIN", 2: "SERVFAIL", 5: "REFUSED"][$0] ?? String($0) }
          ?? request.status
        what = "DNS \(request.method) \(request.domain) \(rcode)"
      case .connect:
        what = "tcp connect\(request.resource)"
      case .network:
        let outcome = request.code.map(String.init) ?? request.status
        what = "\(request.protocolName) \(request.method) \(request.domain)\(request.resource) \(outcome)"
      }
      let offset = Int(Double(request.startMicros - start) / Double(total) * Double(width))
      let length = max(1, Int(Double(request.durationMicros) / Double(total) * Double(width)))
      let bar =
        String(repeating: " ", count: min(width, offset))
        + String(repeating: "█", count: min(width - min(width, offset), length))
      let marks =
        (span.id == slowestSegment ? " ← slowest" : "") + (span.id == breakPoint?.span ? " ← break point" : "")
      text +=
        "\(String(format: "%3d", span.id)) \(indent)\(point)  \(client) → \(server)  \(what)\n"
        + "    \(indent)|\(bar.padding(toLength: width, withPad: " ", startingAt: 0))| "
        + String(format: "%.2f ms (self %.2f)", Double(request.durationMicros) / 1000, Double(span.selfMicros) / 1000)
        + marks + "\n"
    }
    if let slowest = slowestSegment {
      text += String(
        format: "slowest segment: span %d, %.2f ms of its own\n", slowest, Double(spans[slowest].selfMicros) / 1000)
    }
    if let breakPoint { text += "break point: span \(breakPoint.span): \(breakPoint.reason)\n" }
    return text
  }

  /// One line for a report: where the trace breaks, else its slowest segment and who it is.
  public var summary: String {
    let total = Double(max(1, endMicros - startMicros)) / 1000
    if let breakPoint {
      return String(
        format: "%d spans, %.2f ms; break point at span %d: %@", spans.count, total, breakPoint.span, breakPoint.reason)
    }
    guard let slowest = slowestSegment else { return String(format: "%d spans, %.2f ms", spans.count, total) }
    let request = spans[slowest].request
    let server =
      request.serverPod.isEmpty
      ? (request.serverService.isEmpty ? request.serverIP : request.serverService) : request.serverPod
    let what = spans[slowest].kind == .connect ? "tcp connect" : "\(request.protocolName) \(request.method)"
    return String(
      format: "%d spans, %.2f ms; slowest segment span %d (%@ at %@ %@ to %@), %.2f ms of its own", spans.count, total,
      slowest, what, request.observationPoint, request.node, server, Double(spans[slowest].selfMicros) / 1000)
  }

  /// The trace for machines: spans with span_id, parent_id, kind, observation_point, node,
  /// interface, pod, service, start_us, duration_us, self_us, status; break_point and
  /// slowest_segment.
  public var jsonObject: [String: Any] {
    [
      "spans": spans.map { span -> [String: Any] in
        let request = span.request
        var object: [String: Any] = [
          "span_id": span.id, "kind": span.kind.rawValue, "observation_point": request.observationPoint,
          "node": request.node, "interface": request.interface,
          "pod": request.observationPoint.hasPrefix("c") ? request.clientPod : request.serverPod,
          "client_pod": request.clientPod, "server_pod": request.serverPod, "service": request.serverService,
          "client": "\(request.clientIP):\(request.clientPort)", "server": "\(request.serverIP):\(request.serverPort)",
          "protocol": request.protocolName, "method": request.method, "domain": request.domain,
          "resource": request.resource, "start_us": request.startMicros, "duration_us": request.durationMicros,
          "self_us": span.selfMicros, "status": request.status, "link": span.link, "x_request_id": request.xRequestID,
        ]
        object["parent_id"] = span.parent.map { $0 as Any } ?? NSNull()
        object["code"] = request.code.map { $0 as Any } ?? NSNull()
        return object
      },
      "break_point": breakPoint.map { ["span_id": $0.span, "reason": $0.reason] as [String: Any] } ?? NSNull(),
      "slowest_segment": slowestSegment.map { $0 as Any } ?? NSNull(),
      "no_dns_seen": noDNSSeen,
    ]
  }
}
