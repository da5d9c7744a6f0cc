import FathomRecords

/// Links the records of one connection seen before and after DNAT (same client address and port,
/// starting within 2 s of each other, on any capture): the Service side learns the pod that
/// answered, the pod side the Service the client asked for. NodePort connections are SNATed, so
/// their client tuple changes and they are linked only where it does not.
///
/// Records stream in from several captures and are linked as they arrive with the ones still
/// held. Each is held until its capture clocks say no partner can still come — `release(before:)`
/// with a watermark — so memory is bounded by that window, not by the length of the captures.
public struct DNATLinker<Record> {
  /// One connection's client end; a request also by its first byte's sequence number (else its
  /// resource), so the requests of one keep-alive connection stay apart.
  public struct ConnectionKey: Hashable {
    var clientIP: IPAddress
    var clientPort: UInt16
    var protocolCode: UInt8
    var sequence: UInt32?
    var resource: String?
  }

  /// Partners start within this of each other (µs): the same connection on both sides of a NAT.
  static var pairingMicros: Int64 { 2_000_000 }

  struct Held {
    var record: Record
    var source: Int
    var stamp: Int64
    var key: ConnectionKey
  }

  private let key: (borrowing Record) -> ConnectionKey
  private let time: (borrowing Record) -> Int64
  private let tags: WritableKeyPath<Record, RecordTags>
  /// Held records in arrival order; released ones leave nil until the front is compacted.
  private var held: [Held?] = []
  /// Position of `held[0]` in the sequence of all records ever added.
  private var base = 0
  private var front = 0
  private var byKey: [ConnectionKey: [Int]] = [:]
  public private(set) var count = 0

  init(
    key: @escaping (borrowing Record) -> ConnectionKey, time: @escaping (borrowing Record) -> Int64,
    tags: WritableKeyPath<Record, RecordTags>
  ) {
    self.key = key
    self.time = time
    self.tags = tags
  }

  /// Adds a record from capture `source`, stamped with that capture's clock when it was emitted,
  /// and links it with the held records of the same connection.
  public mutating func add(_ record: Record, source: Int, stamp: Int64) {
    var record = record
    let connection = key(record)
    let position = base + held.count
    if let partners = byKey[connection] {
      for partner in partners {
        guard var other = held[partner - base] else { continue }
        guard abs(time(record) - time(other.record)) < Self.pairingMicros else { continue }
        link(&record, &other.record)
        link(&other.record, &record)
        held[partner - base] = other
      }
    }
    held.append(Held(record: record, source: source, stamp: stamp, key: connection))
    byKey[connection, default: []].append(position)
    count += 1
  }

  /// When `service` reached a Service and `pod` is the same connection at a pod: the link both ways.
  private func link(_ service: inout Record, _ pod: inout Record) {
    guard [.service, .nodePort].contains(service[keyPath: tags].server.kind), pod[keyPath: tags].server.kind == .pod
    else { return }
    service[keyPath: tags].answeredBy = pod[keyPath: tags].server.pod
    if pod[keyPath: tags].requestedService == 0 {
      pod[keyPath: tags].requestedService = service[keyPath: tags].server.service
    }
  }

  /// Hands over, in arrival order, the held records stamped before `watermark`: every capture's
  /// clock has passed them by the window, so no partner can still arrive.
  public mutating func release(before watermark: Int64, into body: (_ source: Int, _ record: Record) -> Void) {
    while front < held.count, let first = held[front], first.stamp < watermark {
      releaseFront(first, into: body)
    }
    compact()
  }

  /// Hands over every held record (all captures have ended).
  public mutating func releaseAll(into body: (_ source: Int, _ record: Record) -> Void) {
    while front < held.count {
      if let first = held[front] { releaseFront(first, into: body) } else { front += 1 }
    }
    compact()
  }

  private mutating func releaseFront(_ first: Held, into body: (Int, Record) -> Void) {
    let position = base + front
    if var positions = byKey[first.key] {
      positions.removeAll { $0 == position }
      byKey[first.key] = positions.isEmpty ? nil : positions
    }
    held[front] = nil
    front += 1
    count -= 1
    body(first.source, first.record)
  }

  /// Drops released slots from the front once they are most of the array.
  private mutating func compact() {
    guard front > 4096, front * 2 > held.count else { return }
    held.removeFirst(front)
    base += front
    front = 0
  }
}

extension DNATLinker where Record == TaggedFlow {
  public static func flows() -> DNATLinker<TaggedFlow> {
    DNATLinker(
      key: { ConnectionKey(clientIP: $0.flow.clientIP, clientPort: $0.flow.clientPort, protocolCode: $0.flow.l4Protocol.rawValue) },
      time: { $0.flow.startMicros }, tags: \.tags)
  }
}

extension DNATLinker where Record == TaggedRequest {
  public static func requests() -> DNATLinker<TaggedRequest> {
    DNATLinker(
      key: {
        ConnectionKey(
          clientIP: $0.request.clientIP, clientPort: $0.request.clientPort,
          protocolCode: $0.request.applicationProtocol.rawValue, sequence: $0.request.requestTCPSequence,
          resource: $0.request.requestTCPSequence == nil ? $0.request.resource : nil)
      },
      time: { $0.request.startMicros }, tags: \.tags)
  }
}
