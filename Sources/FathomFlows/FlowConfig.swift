/// Bounds and timeouts of the flow table. Defaults follow DeepFlow (REFERENCE.md, "Flow table
/// defaults"); UDP/ICMP timeouts are Fathom's own (docs/records.md explains them).
public struct FlowConfig: Sendable {
  /// Concurrent flows per table; beyond it the least recently active flows are evicted and counted.
  public var capacity = 65_535
  /// A flow alive longer than this emits a `forced_report` record for each interval; nil: never.
  public var reportIntervalSeconds: Double? = 60
  public var establishedTimeout = 300.0
  /// Idle time after an RST on an established connection.
  public var closingAfterResetTimeout = 35.0
  /// Idle time after an RST during the handshake.
  public var openingAfterResetTimeout = 1.0
  /// Opening: SYN or SYN/ACK only.
  public var openingTimeout = 5.0
  /// One side sent FIN. DeepFlow uses 5 s; Fathom waits 35 s because clients of keep-alive pools
  /// often close their half tens of seconds after the server's FIN (Zeek's http/no_crlf trace:
  /// 25 s), and 5 s would report those ordinary closes as half-close errors.
  public var closingTimeout = 35.0
  public var singleDirectionTimeout = 5.0
  /// Both FINs seen.
  public var closedByFinTimeout = 2.0
  /// UDP and ICMP flows that saw both directions.
  public var datagramTimeout = 30.0

  public init() {}
}
