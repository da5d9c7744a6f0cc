import FathomKube
import FathomRecords

/// A mergeable latency histogram: exact below 16 µs, then 8 log-linear sub-buckets per power of
/// two (at most 1/16 = 6.25% from a bucket's midpoint to its edges). Sparse; merges by adding.
public struct LatencyHistogram: Sendable, Equatable {
  public private(set) var counts: [Int: UInt64] = [:]

  public init() {}

  static func bucket(_ micros: Int64) -> Int {
    let value = max(0, micros)
    if value < 16 { return Int(value) }
    let exponent = 63 - value.leadingZeroBitCount
    let sub = Int((value >> (exponent - 3)) & 7)
    return 16 + (exponent - 4) * 8 + sub
  }

  /// The midpoint of a bucket.
  static func value(_ bucket: Int) -> Int64 {
    if bucket < 16 { return Int64(bucket) }
    let exponent = (bucket - 16) / 8 + 4
    let sub = Int64((bucket - 16) % 8)
    let low = (8 + sub) << (exponent - 3)
    let width = Int64(1) << (exponent - 3)
    return low + width / 2
  }

  public mutating func add(_ micros: Int64, count: UInt64 = 1) { counts[Self.bucket(micros), default: 0] += count }

  public mutating func merge(_ other: LatencyHistogram) {
    for (bucket, count) in other.counts { counts[bucket, default: 0] += count }
  }

  public var total: UInt64 { counts.values.reduce(0, +) }

  /// The value at rank floor(p × n) of the sorted samples, to the bucket's precision.
  public func quantile(_ p: Double) -> Int64 {
    let n = total
    guard n > 0 else { return 0 }
    let rank = min(n - 1, UInt64(Double(n) * p))
    var seen: UInt64 = 0
    for bucket in counts.keys.sorted() {
      seen += counts[bucket]!
      if seen > rank { return Self.value(bucket) }
    }
    return 0
  }

  /// `bucket:count` pairs, comma separated (the stores keep histograms as text).
  public var encoded: String {
    counts.keys.sorted().map { "\($0):\(counts[$0]!)" }.joined(separator: ",")
  }

  public init(encoded: String) {
    for pair in encoded.split(separator: ",") {
      let parts = pair.split(separator: ":")
      if parts.count == 2, let bucket = Int(parts[0]), let count = UInt64(parts[1]) {
        counts[bucket, default: 0] += count
      }
    }
  }
}

/// RED per (client, server, protocol, observation point, endpoint) per interval.
public struct RequestRollupKey: Hashable, Sendable {
  public var intervalStart: Int64
  public var clientPod: Int32
  public var clientService: Int32
  public var serverPod: Int32
  public var serverService: Int32
  /// `ApplicationProtocol.rawValue`.
  public var protocolCode: UInt8
  /// Index into `ObservationPoint.allCases`.
  public var observationPoint: UInt8
  /// Index into the builder's `endpoints`.
  public var endpoint: Int32
}

public struct RequestRollup: Sendable {
  public var requests: UInt64 = 0
  public var responses: UInt64 = 0
  public var clientErrors: UInt64 = 0
  public var serverErrors: UInt64 = 0
  public var timeouts: UInt64 = 0
  public var latencySum: Int64 = 0
  public var latencyMax: Int64 = 0
  public var histogram = LatencyHistogram()
}

/// Network meters per (client, server, observation point, protocol) per interval.
public struct FlowRollupKey: Hashable, Sendable {
  public var intervalStart: Int64
  public var clientPod: Int32
  public var serverPod: Int32
  public var serverService: Int32
  /// Index into `ObservationPoint.allCases`.
  public var observationPoint: UInt8
  public var l4Protocol: UInt8
}

public struct FlowRollup: Sendable {
  public var bytes: UInt64 = 0
  public var packets: UInt64 = 0
  public var newFlows: UInt64 = 0
  public var closedFlows: UInt64 = 0
  public var retransmissions: UInt64 = 0
  public var zeroWindows: UInt64 = 0
  public var rttSum: UInt64 = 0
  public var rttCount: UInt64 = 0
  public var rttMax: UInt64 = 0
  /// Connections that never got established: SYNs unanswered, refused (RST or ICMP).
  public var establishFailures: UInt64 = 0
  public var resets: UInt64 = 0
}

/// Aggregates tagged records into 1 s and 1 min rollups at ingest, so queries read rollups
/// instead of scanning logs. Rows are partial aggregates; stores sum them (histograms merge).
public struct RollupBuilder: Sendable {
  public static let resolutions: [Int64] = [1, 60]
  public private(set) var requests: [Int64: [RequestRollupKey: RequestRollup]] = [:]
  public private(set) var flows: [Int64: [FlowRollupKey: FlowRollup]] = [:]
  /// Endpoints seen, interned so keys hash no strings per record.
  public private(set) var endpoints: [String] = []
  private var endpointIndex: [String: Int32] = [:]
  static let points = ObservationPoint.allCases

  public init() {}

  static func pointCode(_ point: ObservationPoint) -> UInt8 { UInt8(points.firstIndex(of: point) ?? 0) }
  public static func point(_ code: UInt8) -> ObservationPoint { points[Int(code)] }

  mutating func intern(_ endpoint: String) -> Int32 {
    if let index = endpointIndex[endpoint] { return index }
    let index = Int32(endpoints.count)
    endpoints.append(endpoint)
    endpointIndex[endpoint] = index
    return index
  }

  public mutating func add(_ tagged: TaggedRequest) {
    let request = tagged.request
    let tags = tagged.tags
    let endpoint = intern(request.endpoint)
    let point = Self.pointCode(tags.observationPoint)
    for resolution in Self.resolutions {
      let key = RequestRollupKey(
        intervalStart: request.startMicros / 1_000_000 / resolution * resolution, clientPod: tags.client.pod,
        clientService: tags.client.service, serverPod: tags.server.pod, serverService: tags.server.service,
        protocolCode: request.applicationProtocol.rawValue, observationPoint: point, endpoint: endpoint)
      var value = requests[resolution, default: [:]][key] ?? RequestRollup()
      value.requests += 1
      switch request.status {
      case .timeout: value.timeouts += 1
      case .clientError: value.clientErrors += 1
      case .serverError: value.serverErrors += 1
      default: break
      }
      if request.status != .timeout {
        value.responses += 1
        value.latencySum += request.durationMicros
        value.latencyMax = max(value.latencyMax, request.durationMicros)
        value.histogram.add(request.durationMicros)
      }
      requests[resolution, default: [:]][key] = value
    }
  }

  public mutating func add(_ tagged: TaggedFlow) {
    let flow = tagged.flow
    let tags = tagged.tags
    for resolution in Self.resolutions {
      let key = FlowRollupKey(
        intervalStart: flow.startMicros / 1_000_000 / resolution * resolution, clientPod: tags.client.pod,
        serverPod: tags.server.pod, serverService: tags.server.service,
        observationPoint: Self.pointCode(tags.observationPoint), l4Protocol: flow.l4Protocol.rawValue)
      var value = flows[resolution, default: [:]][key] ?? FlowRollup()
      value.bytes += flow.clientToServer.l3Bytes + flow.serverToClient.l3Bytes
      value.packets += flow.clientToServer.packets + flow.serverToClient.packets
      if flow.reportIndex == 0 { value.newFlows += 1 }
      if flow.isFinal { value.closedFlows += 1 }
      value.retransmissions += UInt64(flow.clientToServer.retransmissions + flow.serverToClient.retransmissions)
      value.zeroWindows += UInt64(flow.clientToServer.zeroWindows + flow.serverToClient.zeroWindows)
      if flow.rttMicros > 0 {
        value.rttSum += UInt64(flow.rttMicros)
        value.rttCount += 1
        value.rttMax = max(value.rttMax, UInt64(flow.rttMicros))
      }
      switch flow.closeType {
      case .clientSynRepeat, .serverSynAckRepeat, .serverReset, .icmpUnreachable, .clientEstablishReset,
        .serverEstablishReset, .serverQueueLack:
        value.establishFailures += 1
      case .clientRst, .serverRst:
        value.resets += 1
      default:
        break
      }
      flows[resolution, default: [:]][key] = value
    }
  }
}
