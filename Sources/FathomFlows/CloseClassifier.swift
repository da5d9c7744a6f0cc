import FathomRecords

/// Names how a flow ended and whose fault it was (REFERENCE.md, "Close types").
enum CloseClassifier {
  static func classify(_ entry: FlowEntry, reason: FlowMeter.EndReason) -> (CloseType, FlowStatus) {
    if reason == .evicted { return (.evicted, .ok) }
    let ended = reason == .timeout || reason == .superseded
    guard entry.key.ipProtocol == 6 else {
      if entry.icmpUnreachable != nil { return (.icmpUnreachable, .serverError) }
      return (ended ? .idle : .inProgress, .ok)
    }
    let client = entry.clientSide
    let server = 1 - client
    let serverSentData = entry.side(server).sentPayload
    if entry.icmpUnreachable != nil && entry.state < .established {
      return (.serverReset, .serverError)  // REJECT with icmp-port-unreachable: refused
    }
    if (entry.synAcksAfterHandshake > 0 || entry.synsAfterSynAck > 3) && !serverSentData {
      return (.serverQueueLack, .serverError)
    }
    if entry.reusedPorts && entry.state < .established
      || entry.reusedPorts && entry.stateAtReset < .established
        && entry.state == .reset
    {
      return (.clientSourcePortReuse, .clientError)
    }
    switch entry.state {
    case .reset:
      if entry.resetBy == server {
        switch entry.stateAtReset {
        case .none, .synSent: return (.serverReset, .serverError)
        case .synReceived: return (.serverEstablishReset, .serverError)
        default: return (.serverRst, .serverError)
        }
      }
      if entry.stateAtReset < .established { return (.clientEstablishReset, .clientError) }
      return (.clientRst, serverSentData ? .ok : .clientError)
    case .closed:
      return (.finish, .ok)
    case .closing:
      guard ended else { return (.inProgress, .ok) }
      return entry.firstFinBy == client ? (.clientHalfClose, .clientError) : (.serverHalfClose, .serverError)
    case .synSent:
      guard ended else { return (.inProgress, .ok) }
      if entry.reusedPorts { return (.clientSourcePortReuse, .clientError) }
      return (.clientSynRepeat, .serverError)
    case .synReceived:
      guard ended else { return (.inProgress, .ok) }
      if entry.reusedPorts { return (.clientSourcePortReuse, .clientError) }
      return (.serverSynAckRepeat, .clientError)
    case .established, .none:
      guard ended else { return (.inProgress, .ok) }
      return (.timeout, .serverError)
    }
  }
}
