/// The opening of a SOCKS4/4a (de facto spec) or SOCKS5 (RFC 1928, RFC 1929) connection. Once
/// both directions have finished their handshake, the rest of the stream is the tunnelled
/// protocol, which the protocol stage infers afresh from content.
///
/// Each direction is read on its own; a message names its kind in its first byte:
/// - client: SOCKS4 request, or SOCKS5 greeting, optional username/password, request;
/// - server: SOCKS4 reply, or SOCKS5 method choice, optional auth status, reply.
struct SOCKSHandshake {
  enum Progress: Equatable {
    case handshake
    /// The handshake is over in this direction: what follows is tunnel payload.
    case tunnel
    /// Refused, or not SOCKS after all: the flow carries nothing Fathom parses.
    case failed
  }

  /// Handshake messages are short; a longer one is not SOCKS.
  static let maxMessageBytes = 600

  private(set) var client = Progress.handshake
  private(set) var server = Progress.handshake
  private var clientBuffer: [UInt8] = []
  private var serverBuffer: [UInt8] = []
  private var clientMessages = 0
  private var serverMessages = 0

  var failed: Bool { client == .failed || server == .failed }
  var established: Bool { client == .tunnel && server == .tunnel }

  /// True when `bytes` is a whole SOCKS4 request or SOCKS5 greeting, which a client sends alone.
  static func looksLikeSOCKS(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard bytes.count >= 3, bytes[0] == 4 || bytes[0] == 5 else { return false }
    if case .message(let length, _, _) = clientMessage(bytes, first: true) { return length == bytes.count }
    return false
  }

  /// Reads bytes of one direction; returns how many belonged to the handshake (the rest, if
  /// any, is tunnel payload).
  mutating func feed(_ bytes: UnsafeRawBufferPointer, fromClient: Bool) -> Int {
    if fromClient {
      return Self.consume(bytes, buffer: &clientBuffer, progress: &client, messages: &clientMessages, fromClient: true)
    }
    return Self.consume(bytes, buffer: &serverBuffer, progress: &server, messages: &serverMessages, fromClient: false)
  }

  enum Parse: Equatable {
    case incomplete
    case invalid
    /// `final`: the direction's last handshake message; `refused`: the server said no.
    case message(length: Int, final: Bool, refused: Bool)
  }

  private static func consume(
    _ bytes: UnsafeRawBufferPointer, buffer: inout [UInt8], progress: inout Progress, messages: inout Int,
    fromClient: Bool
  ) -> Int {
    var used = 0
    while progress == .handshake && used < bytes.count {
      // Messages are read whole from the buffer, as one may be split across segments.
      let before = buffer.count
      let take = min(bytes.count - used, maxMessageBytes - before)
      buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[used..<(used + take)]))
      let first = messages == 0
      let parse = buffer.withUnsafeBytes {
        fromClient ? clientMessage($0, first: first) : serverMessage($0, first: first)
      }
      switch parse {
      case .incomplete:
        if buffer.count >= maxMessageBytes { progress = .failed }
        return bytes.count
      case .invalid:
        progress = .failed
        return bytes.count
      case .message(let length, let final, let refused):
        used += length - before
        buffer.removeAll(keepingCapacity: true)
        messages += 1
        if refused {
          progress = .failed
        } else if final {
          progress = .tunnel
        }
      }
    }
    return used
  }

  /// The message ending with a SOCKS5 address (type byte at `at`) and port.
  private static func addressEnd(_ raw: UnsafeRawBufferPointer, at: Int) -> Parse {
    guard raw.count > at else { return .incomplete }
    switch raw[at] {
    case 1: return .message(length: at + 1 + 4 + 2, final: true, refused: false)
    case 4: return .message(length: at + 1 + 16 + 2, final: true, refused: false)
    case 3:
      guard raw.count > at + 1 else { return .incomplete }
      return .message(length: at + 2 + Int(raw[at + 1]) + 2, final: true, refused: false)
    default: return .invalid
    }
  }

  /// `incomplete` until `raw` holds `length` bytes.
  private static func whole(_ raw: UnsafeRawBufferPointer, _ parse: Parse) -> Parse {
    if case .message(let length, _, _) = parse, raw.count < length { return .incomplete }
    return parse
  }

  private static func terminator(_ raw: UnsafeRawBufferPointer, from start: Int) -> Int? {
    guard start < raw.count else { return nil }
    return raw[start...].firstIndex(of: 0)
  }

  static func clientMessage(_ raw: UnsafeRawBufferPointer, first: Bool) -> Parse {
    guard let kind = raw.first else { return .incomplete }
    switch (first, kind) {
    case (true, 4):
      // VER CMD PORT(2) IP(4) USERID NUL [DOMAIN NUL when IP is 0.0.0.x, x != 0: SOCKS4a]
      guard raw.count >= 2 else { return .incomplete }
      guard raw[1] == 1 || raw[1] == 2 else { return .invalid }
      guard raw.count >= 9, let userEnd = terminator(raw, from: 8) else { return .incomplete }
      let socks4a = raw[4] == 0 && raw[5] == 0 && raw[6] == 0 && raw[7] != 0
      guard socks4a else { return .message(length: userEnd + 1, final: true, refused: false) }
      guard let domainEnd = terminator(raw, from: userEnd + 1) else { return .incomplete }
      return .message(length: domainEnd + 1, final: true, refused: false)
    case (true, 5):
      // VER NMETHODS METHODS
      guard raw.count >= 2 else { return .incomplete }
      guard raw[1] >= 1 && raw[1] <= 16 else { return .invalid }
      return whole(raw, .message(length: 2 + Int(raw[1]), final: false, refused: false))
    case (false, 1):
      // RFC 1929: VER ULEN UNAME PLEN PASSWD
      guard raw.count >= 2 else { return .incomplete }
      let passwordLength = 2 + Int(raw[1])
      guard raw.count > passwordLength else { return .incomplete }
      return whole(raw, .message(length: passwordLength + 1 + Int(raw[passwordLength]), final: false, refused: false))
    case (false, 5):
      // VER CMD RSV ATYP ADDR PORT
      guard raw.count >= 3 else { return .incomplete }
      guard raw[1] >= 1 && raw[1] <= 3, raw[2] == 0 else { return .invalid }
      return whole(raw, addressEnd(raw, at: 3))
    default:
      return .invalid
    }
  }

  static func serverMessage(_ raw: UnsafeRawBufferPointer, first: Bool) -> Parse {
    guard let kind = raw.first else { return .incomplete }
    switch (first, kind) {
    case (true, 0):
      // SOCKS4 reply: VN(0) CD PORT IP; 90 = granted.
      return whole(raw, .message(length: 8, final: true, refused: raw.count >= 2 && raw[1] != 90))
    case (true, 5):
      // Method choice: 0 none, 2 username/password; GSSAPI's framing is not read; 0xFF none acceptable.
      guard raw.count >= 2 else { return .incomplete }
      guard raw[1] == 0 || raw[1] == 2 || raw[1] == 0xFF else { return .invalid }
      return .message(length: 2, final: false, refused: raw[1] == 0xFF)
    case (false, 1):
      guard raw.count >= 2 else { return .incomplete }
      return .message(length: 2, final: false, refused: raw[1] != 0)
    case (false, 5):
      // VER REP RSV ATYP BND.ADDR BND.PORT; REP 0 = succeeded.
      guard raw.count >= 3 else { return .incomplete }
      guard raw[2] == 0 else { return .invalid }
      let address = addressEnd(raw, at: 3)
      guard case .message(let length, _, _) = address else { return address }
      return whole(raw, .message(length: length, final: true, refused: raw[1] != 0))
    default:
      return .invalid
    }
  }
}
