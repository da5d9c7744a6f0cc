import FathomRecords

/// One DNS message, decoded from wire bytes with bounds on names, pointers and records.
struct DNSMessage {
  var id: UInt16
  var isResponse: Bool
  var opcode: UInt8
  /// The header's 4 bits, extended by the 8 high bits of an EDNS OPT record (RFC 6891), so
  /// BADVERS (16) and BADCOOKIE (23) are told from NOERROR.
  var rcode: UInt16
  /// The question's name (`.domain`) and type name (`.method`), ready to become a record's.
  var texts = RequestTexts()
  var questionType: UInt16 = 0
  var answers: [DNSAnswer] = []

  static let maxNameBytes = 255
  static let maxPointerJumps = 32
  static let maxAnswers = 32
  /// Authority and additional records walked to find the OPT record.
  static let maxSkippedRecords = 64

  /// Decodes a message; nil when even the header or question is unreadable. Without
  /// `questionTexts` the question is checked but its texts are not made (a response whose query
  /// is pending takes the query's, and inference only asks whether the bytes are DNS).
  /// `spare` is where the texts go (a recycled buffer).
  init?(_ bytes: UnsafeRawBufferPointer, questionTexts: Bool = true, into spare: RequestTexts = RequestTexts()) {
    guard bytes.count >= 12 else { return nil }
    id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
    isResponse = bytes[2] & 0x80 != 0
    opcode = (bytes[2] >> 3) & 0x0F
    rcode = UInt16(bytes[3] & 0x0F)
    let questions = Int(UInt16(bytes[4]) << 8 | UInt16(bytes[5]))
    let answerCount = Int(UInt16(bytes[6]) << 8 | UInt16(bytes[7]))
    let authorityCount = Int(UInt16(bytes[8]) << 8 | UInt16(bytes[9]))
    let additionalCount = Int(UInt16(bytes[10]) << 8 | UInt16(bytes[11]))
    var offset = 12
    if questions > 0 {
      var question = spare
      var nameEnd: Int?
      if questionTexts {
        // Decoded straight into the record's texts (through a buffer on the stack it was copied
        // twice, label by label).
        question.set(.domain, writingAtMost: Self.maxNameBytes) { destination in
          guard let (length, end) = Self.decodeName(bytes, at: offset, into: destination) else { return nil }
          nameEnd = end
          return length
        }
      } else {
        nameEnd = Self.withName(bytes, at: offset) { _, end in end }
      }
      guard let next = nameEnd, next + 4 <= bytes.count else { return nil }
      questionType = UInt16(bytes[next]) << 8 | UInt16(bytes[next + 1])
      if questionTexts {
        // Swapped, not assigned: a second reference to the buffer made the type name copy it.
        swap(&texts, &question)
        Self.setTypeName(questionType, in: &texts)
      }
      offset = next + 4
      // Further questions (rare) are skipped.
      for _ in 1..<min(questions, 16) {
        guard let after = Self.skipName(bytes, at: offset), after + 4 <= bytes.count else { return }
        offset = after + 4
      }
    }
    for _ in 0..<min(answerCount, Self.maxAnswers) {
      // An answer's owner name is skipped, not decoded: only where it ends matters.
      guard let next = Self.skipName(bytes, at: offset), next + 10 <= bytes.count else { return }
      let type = UInt16(bytes[next]) << 8 | UInt16(bytes[next + 1])
      let ttl =
        UInt32(bytes[next + 4]) << 24 | UInt32(bytes[next + 5]) << 16 | UInt32(bytes[next + 6]) << 8
        | UInt32(bytes[next + 7])
      let length = Int(UInt16(bytes[next + 8]) << 8 | UInt16(bytes[next + 9]))
      let data = next + 10
      guard data + length <= bytes.count else { return }
      if let value = Self.rdata(bytes, type: type, at: data, length: length) {
        answers.append(DNSAnswer(type: Self.typeName(type), value: value, ttl: ttl))
      }
      offset = data + length
    }
    guard answerCount <= Self.maxAnswers else { return }
    // Authority records are skipped; the OPT pseudo-record sits among the additional ones.
    for index in 0..<min(authorityCount + additionalCount, Self.maxSkippedRecords) {
      guard let next = Self.skipName(bytes, at: offset), next + 10 <= bytes.count else { return }
      let type = UInt16(bytes[next]) << 8 | UInt16(bytes[next + 1])
      if type == 41 && index >= authorityCount {
        rcode |= UInt16(bytes[next + 4]) << 4
        return
      }
      offset = next + 10 + Int(UInt16(bytes[next + 8]) << 8 | UInt16(bytes[next + 9]))
    }
  }

  /// The offset after a name, without decoding it: labels up to a root byte or a pointer.
  static func skipName(_ bytes: UnsafeRawBufferPointer, at start: Int) -> Int? {
    var offset = start
    while offset < bytes.count, offset - start <= maxNameBytes {
      let length = Int(bytes[offset])
      if length == 0 { return offset + 1 }
      if length & 0xC0 == 0xC0 { return offset + 2 <= bytes.count ? offset + 2 : nil }
      guard length & 0xC0 == 0 else { return nil }
      offset += 1 + length
    }
    return nil
  }

  /// A (possibly compressed) name and the offset after it in the message.
  static func name(_ bytes: UnsafeRawBufferPointer, at start: Int) -> (String, Int)? {
    withName(bytes, at: start) { name, end in (String(decoding: name, as: UTF8.self), end) }
  }

  /// Decodes a (possibly compressed) name on the stack and lends it, with the offset after it in
  /// the message, to `body`; nil when the name is malformed (a bad pointer, a loop, too long).
  static func withName<Result>(
    _ bytes: UnsafeRawBufferPointer, at start: Int, _ body: (UnsafeRawBufferPointer, Int) -> Result
  ) -> Result? {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maxNameBytes) { labels in
      guard let (count, end) = decodeName(bytes, at: start, into: labels.baseAddress!) else { return nil }
      return body(UnsafeRawBufferPointer(start: labels.baseAddress!, count: count), end)
    }
  }

  /// Writes a (possibly compressed) name in dotted form at `destination` (room for
  /// `maxNameBytes`); returns its length and the offset after it in the message, or nil when it
  /// is malformed (a bad pointer, a loop, too long).
  static func decodeName(
    _ bytes: UnsafeRawBufferPointer, at start: Int, into destination: UnsafeMutablePointer<UInt8>
  ) -> (length: Int, end: Int)? {
    guard let source = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
    var count = 0
    var offset = start
    var end: Int?
    var jumps = 0
    while true {
      // A run of labels up to a pointer or the root is copied at once with its length bytes,
      // which then become the dots (labels are mostly a few bytes: a copy each cost more).
      var position = offset
      while position < bytes.count {
        let length = Int(source[position])
        guard length != 0, length & 0xC0 == 0 else { break }
        guard length < 64, position + 1 + length <= bytes.count else { return nil }
        position += 1 + length
        guard position - offset <= maxNameBytes + 1 else { return nil }  // too long already
      }
      guard position < bytes.count else { return nil }
      if position > offset {
        let separator = count > 0 ? 1 : 0
        let runLength = position - offset - 1
        guard count + separator + runLength <= maxNameBytes else { return nil }
        if separator == 1 { destination[count] = UInt8(ascii: ".") }
        count += separator
        (destination + count).update(from: source + offset + 1, count: runLength)
        var label = offset + 1 + Int(source[offset])
        while label < position {
          destination[count + label - offset - 1] = UInt8(ascii: ".")
          label += 1 + Int(source[label])
        }
        count += runLength
      }
      let length = Int(source[position])
      if length == 0 {
        if end == nil { end = position + 1 }
        break
      }
      guard length & 0xC0 == 0xC0, position + 1 < bytes.count else { return nil }
      jumps += 1
      guard jumps <= maxPointerJumps else { return nil }  // compression loop
      if end == nil { end = position + 2 }
      let target = (length & 0x3F) << 8 | Int(source[position + 1])
      guard target < bytes.count else { return nil }
      offset = target
    }
    return (count, end!)
  }

  static func rdata(_ bytes: UnsafeRawBufferPointer, type: UInt16, at start: Int, length: Int) -> String? {
    switch type {
    case 1 where length == 4:
      return IPAddress(ipv4: UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: start, as: UInt32.self)))
        .description
    case 28 where length == 16:
      var high: UInt64 = 0
      var low: UInt64 = 0
      for i in 0..<8 {
        high = high << 8 | UInt64(bytes[start + i])
        low = low << 8 | UInt64(bytes[start + 8 + i])
      }
      return IPAddress(high: high, low: low).description
    case 2, 5, 12:  // NS, CNAME, PTR
      return name(bytes, at: start)?.0
    case 15 where length > 2:  // MX
      return name(bytes, at: start + 2).map { "\(Int(bytes[start]) << 8 | Int(bytes[start + 1])) \($0.0)" }
    case 33 where length > 6:  // SRV: priority weight port target
      let word = { (i: Int) in Int(bytes[start + i]) << 8 | Int(bytes[start + i + 1]) }
      return name(bytes, at: start + 6).map { "\(word(0)) \(word(2)) \(word(4)) \($0.0)" }
    case 16:  // TXT: character strings
      var parts: [String] = []
      var offset = start
      while offset < start + length {
        let size = Int(bytes[offset])
        guard offset + 1 + size <= start + length else { break }
        parts.append(
          String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(offset + 1)..<(offset + 1 + size)]), as: UTF8.self))
        offset += 1 + size
      }
      return parts.joined(separator: " ")
    case 6:  // SOA: primary name server
      return name(bytes, at: start)?.0
    case 41:  // OPT pseudo-record is not an answer
      return nil
    default:
      return "\(length) bytes"
    }
  }

  static func typeName(_ type: UInt16) -> String {
    if let name = knownTypeName(type) { return name.description }
    return "TYPE\(type)"
  }

  /// A type's name into a record's `.method`, without making a String for the known ones.
  static func setTypeName(_ type: UInt16, in texts: inout RequestTexts) {
    if let name = knownTypeName(type) { texts.set(.method, name) } else { texts[.method] = "TYPE\(type)" }
  }

  static func knownTypeName(_ type: UInt16) -> StaticString? {
    switch type {
    case 1: "A"
    case 2: "NS"
    case 5: "CNAME"
    case 6: "SOA"
    case 11: "WKS"
    case 12: "PTR"
    case 13: "HINFO"
    case 15: "MX"
    case 16: "TXT"
    case 28: "AAAA"
    case 30: "NXT"
    case 33: "SRV"
    case 35: "NAPTR"
    case 39: "DNAME"
    case 41: "OPT"
    case 43: "DS"
    case 44: "SSHFP"
    case 46: "RRSIG"
    case 47: "NSEC"
    case 48: "DNSKEY"
    case 50: "NSEC3"
    case 51: "NSEC3PARAM"
    case 52: "TLSA"
    case 64: "SVCB"
    case 65: "HTTPS"
    case 99: "SPF"
    case 249: "TKEY"
    case 250: "TSIG"
    case 251: "IXFR"
    case 252: "AXFR"
    case 255: "ANY"
    case 257: "CAA"
    default: nil
    }
  }

  /// REFERENCE.md: 0 ok; 1 (FORMERR) and 3 (NXDOMAIN) client errors; others server errors.
  var status: RequestStatus {
    switch rcode {
    case 0: .ok
    case 1, 3: .clientError
    default: .serverError
    }
  }
}

/// DNS on one flow: queries paired with responses by transaction id; over TCP, messages framed by
/// their 2-byte length, several per segment or split across segments.
final class DNSSession {
  /// Queries waiting for their answers, oldest first: a flow has one or two at a time (A and
  /// AAAA), where a search through a list costs less than hashing into a Dictionary, and timeouts
  /// come out in the order the queries were sent.
  var pending: [PendingRequest] = []
  /// Bytes of a TCP message split across segments.
  var partial: [UInt8] = []
  var partialStart: Int64 = 0
  var partialSequence: UInt32?

  func message(
    _ bytes: UnsafeRawBufferPointer, fromClient: Bool, sequence: UInt32?, nanos: Int64, identity: FlowIdentity,
    config: RequestConfig, sink: inout RequestSink
  ) {
    // A response whose query is pending takes the query's texts; counting only (`fathom flows`)
    // needs none.
    let answersPending =
      bytes.count >= 3 && bytes[2] & 0x80 != 0 && pendingIndex(of: UInt16(bytes[0]) << 8 | UInt16(bytes[1])) != nil
    let questionTexts = sink.keepsRecords && !answersPending
    guard
      var message = DNSMessage(
        bytes, questionTexts: questionTexts, into: questionTexts ? sink.newTexts() : RequestTexts())
    else {
      sink.parseFailures += 1
      return
    }
    expire(now: nanos, identity: identity, config: config, sink: &sink)
    if !message.isResponse {
      var request = PendingRequest(startNanos: nanos, sequence: sequence)
      swap(&request.texts, &message.texts)
      request.texts.share(.resource, with: .domain)
      request.bytes = UInt64(bytes.count)
      request.transactionID = UInt32(message.id)
      if let previous = pendingIndex(of: message.id) {
        // The resolver asked again with the same id: the earlier attempt went unanswered (a lost
        // query or answer), which is what a DNS-loss diagnosis needs to see.
        sink.emit(.dns, identity, request: pending.take(at: previous), response: nil, status: .timeout)
      }
      pending.append(request)
      if pending.count > config.maxPendingPerFlow,
        let oldest = pending.indices.min(by: { pending[$0].startNanos < pending[$1].startNanos })
      {
        sink.evicted += 1
        sink.emit(.dns, identity, request: pending.take(at: oldest), response: nil, status: .unknown)
      }
      return
    }
    var response = ResponseInfo(
      startNanos: nanos, endNanos: nanos, sequence: sequence, status: message.status, code: Int32(message.rcode))
    response.bytes = UInt64(bytes.count)
    response.answers = message.answers
    if let index = pendingIndex(of: message.id) {
      let request = pending.take(at: index)
      sink.emit(.dns, identity, request: request, response: response)
    } else {
      // An answer whose query the capture did not see: report it with its own question.
      // Its question's texts and id go on the record as a response's do (no request half).
      swap(&response.texts, &message.texts)
      response.texts.share(.resource, with: .domain)
      sink.emit(.dns, identity, response: &response)
      if let buffer = sink.buffer, !buffer.records.isEmpty {
        buffer.records[buffer.records.count - 1].transactionID = UInt32(message.id)
      }
    }
  }

  /// DNS over TCP: each message is preceded by its 16-bit length.
  func stream(
    _ data: UnsafeRawBufferPointer, fromClient: Bool, sequence: UInt32, nanos: Int64, identity: FlowIdentity,
    config: RequestConfig, sink: inout RequestSink
  ) {
    var offset = 0
    if !partial.isEmpty {
      let need = partial.count >= 2 ? Int(partial[0]) << 8 | Int(partial[1]) + 2 - partial.count : 2 - partial.count
      let take = min(need, data.count)
      partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[0..<take]))
      offset = take
      if partial.count >= 2 {
        let total = Int(partial[0]) << 8 | Int(partial[1])
        if partial.count == total + 2 {
          let bytes = partial
          partial.removeAll(keepingCapacity: true)
          bytes.withUnsafeBytes {
            message(
              UnsafeRawBufferPointer(rebasing: $0[2...]), fromClient: fromClient, sequence: partialSequence,
              nanos: partialStart, identity: identity, config: config, sink: &sink)
          }
        } else if partial.count < total + 2 {
          return
        }
      } else {
        return
      }
    }
    while offset < data.count {
      guard data.count - offset >= 2 else {
        startPartial(data, from: offset, sequence: sequence, nanos: nanos)
        return
      }
      let length = Int(data[offset]) << 8 | Int(data[offset + 1])
      guard length >= 12 else {
        sink.parseFailures += 1
        return
      }
      if offset + 2 + length > data.count {
        startPartial(data, from: offset, sequence: sequence, nanos: nanos)
        return
      }
      message(
        UnsafeRawBufferPointer(rebasing: data[(offset + 2)..<(offset + 2 + length)]), fromClient: fromClient,
        sequence: sequence &+ UInt32(truncatingIfNeeded: offset), nanos: nanos, identity: identity, config: config,
        sink: &sink)
      offset += 2 + length
    }
  }

  private func startPartial(_ data: UnsafeRawBufferPointer, from offset: Int, sequence: UInt32, nanos: Int64) {
    partial = Array(UnsafeRawBufferPointer(rebasing: data[offset...]))
    partialStart = nanos
    partialSequence = sequence &+ UInt32(truncatingIfNeeded: offset)
  }

  func gap() { partial.removeAll() }

  func expire(now: Int64, identity: FlowIdentity, config: RequestConfig, sink: inout RequestSink) {
    guard !pending.isEmpty else { return }
    let window = Int64(config.dnsResponseWindow * 1e9)
    var index = 0
    while index < pending.count {
      guard now - pending[index].startNanos > window else {
        index += 1
        continue
      }
      sink.emit(.dns, identity, request: pending.take(at: index), response: nil, status: .timeout)
    }
  }

  private func pendingIndex(of id: UInt16) -> Int? {
    pending.firstIndex { $0.transactionID == UInt32(id) }
  }

  func finish(unanswered: RequestStatus, identity: FlowIdentity, sink: inout RequestSink) {
    for request in pending.sorted(by: { $0.startNanos < $1.startNanos }) {
      sink.emit(.dns, identity, request: request, response: nil, status: unanswered)
    }
    pending.removeAll()
  }

  /// True when bytes look like a DNS message (header counts and opcode plausible).
  static func looksLikeDNS(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard bytes.count >= 12 else { return false }
    let opcode = (bytes[2] >> 3) & 0x0F
    let questions = Int(bytes[4]) << 8 | Int(bytes[5])
    return opcode <= 5 && questions <= 1 && (questions == 1 || bytes[2] & 0x80 != 0)
  }
}
