import FathomKube
import FathomRecords

/// Storage behind one protocol. Records keep SmartEncoding ids for every Kubernetes tag; the
/// `resources` dictionary holds each id's kind, namespace, name, labels and validity, and names
/// are joined in at query time.
public protocol RecordStore: AnyObject {
  /// Registers an input. A source already stored completely (same path, size and mtime) is
  /// skipped; a source a killed run left incomplete is deleted and read again.
  func beginSource(path: String, size: Int64, modified: Int64) throws -> SourceStart
  /// Stores the dictionary entries of an index; returns index id → store id.
  func register(_ resources: [Resource]) throws -> [Int32: Int64]
  /// Stores a batch of records (a slice, so a caller holding all of a run's records writes them
  /// in batches without copying them).
  func write(flows: ArraySlice<TaggedFlow>, source: Int64, ids: [Int32: Int64]) throws
  func write(requests: ArraySlice<TaggedRequest>, source: Int64, ids: [Int32: Int64]) throws
  /// Stores 1 s and 1 min rollups (partial aggregates; queries sum them).
  func write(rollups: RollupBuilder, source: Int64, ids: [Int32: Int64]) throws
  func finishSource(_ source: Int64) throws
  /// The summary `fathom analyze` prints.
  func summary() throws -> AnalysisSummary
  /// RED of one Service measured at its pods (`s`) over a time range, from the 1-minute rollups.
  func red(namespace: String, name: String, fromMicros: Int64, toMicros: Int64) throws -> AnalysisSummary.ServiceRow?
}

extension RecordStore {
  public func write(flows: [TaggedFlow], source: Int64, ids: [Int32: Int64]) throws {
    try write(flows: flows[...], source: source, ids: ids)
  }

  public func write(requests: [TaggedRequest], source: Int64, ids: [Int32: Int64]) throws {
    try write(requests: requests[...], source: source, ids: ids)
  }
}

/// Rollup tables and columns, shared by both stores.
enum RollupSchema {
  /// `request_rollup_1s`, `flow_rollup_1m`, ...
  static func table(_ kind: String, _ resolution: Int64) -> String {
    "\(kind)_rollup_\(resolution == 1 ? "1s" : "1m")"
  }

  static let requestKey = [
    "source_id", "interval_start", "client_pod", "client_service", "server_pod", "server_service", "protocol",
    "observation_point", "endpoint",
  ]
  static let requestValues = [
    "requests", "responses", "client_errors", "server_errors", "timeouts", "latency_sum_us", "latency_max_us",
    "histogram",
  ]
  static let flowKey = [
    "source_id", "interval_start", "client_pod", "server_pod", "server_service", "observation_point", "protocol",
  ]
  static let flowValues = [
    "bytes", "packets", "new_flows", "closed_flows", "retransmissions", "zero_windows", "rtt_sum_us", "rtt_count",
    "rtt_max_us", "establish_failures", "resets",
  ]
}

public enum SourceStart: Sendable, Equatable {
  /// Read it; `restarted` when an incomplete earlier attempt was discarded.
  case read(id: Int64, restarted: Bool)
  /// Already stored completely.
  case skip
}

/// What `fathom analyze` reports (JSON field names in `jsonObject`).
public struct AnalysisSummary: Sendable {
  public struct ServiceRow: Sendable {
    public var namespace: String
    public var name: String
    public var requests: Int
    public var serverErrors: Int
    public var clientErrors: Int
    public var timeouts: Int
    public var p50Micros: Int64
    public var p99Micros: Int64
    /// Per answering pod: name → requests.
    public var pods: [String: Int]
  }

  public struct DNSRow: Sendable {
    public var name: String
    public var qtype: String
    public var requests: Int
    public var rcodes: [String: Int]
    public var timeouts: Int
    public var answers: [String]
  }

  public struct ConnectionFailureRow: Sendable {
    public var kind: String
    public var server: String
    public var count: Int
  }

  public var services: [ServiceRow] = []
  public var dns: [DNSRow] = []
  public var connectionFailures: [ConnectionFailureRow] = []
  public var flows = 0
  public var requests = 0

  public init() {}

  public var jsonObject: [String: Any] {
    [
      "flows": flows, "requests": requests,
      "services": services.map {
        [
          "namespace": $0.namespace, "name": $0.name, "requests": $0.requests, "server_errors": $0.serverErrors,
          "client_errors": $0.clientErrors, "timeouts": $0.timeouts, "p50_us": $0.p50Micros, "p99_us": $0.p99Micros,
          "pods": $0.pods,
        ] as [String: Any]
      },
      "dns": dns.map {
        [
          "name": $0.name, "qtype": $0.qtype, "requests": $0.requests, "rcodes": $0.rcodes, "timeouts": $0.timeouts,
          "answers": $0.answers,
        ] as [String: Any]
      },
      "connection_failures": connectionFailures.map {
        ["kind": $0.kind, "server": $0.server, "count": $0.count] as [String: Any]
      },
    ]
  }
}
