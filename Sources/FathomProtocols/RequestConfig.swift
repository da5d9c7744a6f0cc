/// Bounds and windows of the protocol stage (REFERENCE.md, "Application requests").
public struct RequestConfig: Sendable {
  /// A request on TCP without a response after this long is a timeout.
  public var tcpResponseWindow = 120.0
  /// A DNS query without an answer after this long is a timeout.
  public var dnsResponseWindow = 15.0
  /// Longest HTTP header block (or Redis line) parsed; longer ones are parse failures.
  public var maxHeaderBytes = 16 * 1024
  /// Requests waiting for a response per flow; beyond it the oldest is reported as `unknown`.
  public var maxPendingPerFlow = 64
  /// Out-of-order TCP segments held per direction before a gap is declared.
  public var maxBufferedSegments = 32
  public var maxBufferedBytes = 256 * 1024
  /// Payload packets examined before a flow is declared not a known protocol.
  public var inferenceAttempts = 4
  /// Server endpoints whose protocol is remembered (cleared when full).
  public var endpointCacheCapacity = 65_536
  /// Longest string kept for a record field (paths, Redis keys, DNS answers).
  public var maxFieldBytes = 1024
  /// False when only the per-flow request counts are wanted (`fathom flows`): no RequestLog is
  /// built, which saves ~10% of the pipeline's time.
  public var keepsRecords = true

  public init() {}
}

/// Counters of the protocol stage, reported with the summary.
public struct RequestCounters: Sendable, Equatable {
  public var requestsEmitted: UInt64 = 0
  public var parseFailures: UInt64 = 0
  /// Gaps in a TCP stream (lost or unbuffered segments) after which parsing resynchronised.
  public var streamGaps: UInt64 = 0
  /// Segments dropped from a full out-of-order buffer.
  public var segmentsDropped: UInt64 = 0
  /// Requests evicted from a full pending table (reported as `unknown`).
  public var pendingEvicted: UInt64 = 0
  public var flowsWithProtocol: UInt64 = 0
  public init() {}
}
