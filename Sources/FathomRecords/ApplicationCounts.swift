/// Per-flow counts of application requests, added to FlowLog by the protocol stage.
public struct ApplicationCounts: Sendable, Equatable {
  public var requests: UInt32 = 0
  public var responses: UInt32 = 0
  public var clientErrors: UInt32 = 0
  public var serverErrors: UInt32 = 0
  public var timeouts: UInt32 = 0
  /// Requests the parser could not read, or evicted from a full pending table.
  public var unknown: UInt32 = 0

  public init() {}

  public static func += (a: inout ApplicationCounts, b: ApplicationCounts) {
    a.requests &+= b.requests
    a.responses &+= b.responses
    a.clientErrors &+= b.clientErrors
    a.serverErrors &+= b.serverErrors
    a.timeouts &+= b.timeouts
    a.unknown &+= b.unknown
  }
}
