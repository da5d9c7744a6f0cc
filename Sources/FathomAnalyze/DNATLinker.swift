import FathomKube
import FathomRecords

/// Links the records of one connection seen before and after DNAT (same client address and port,
/// starting within 2 s of each other, on any capture): the Service side learns the pod that
/// answered, the pod side the Service the client asked for. NodePort connections are SNATed, so
/// their client tuple changes and they are linked only where it does not.
///
/// (Beside the stream that feeds it, so the generic code is specialised for both record types.)
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
  }

  private let key: (borrowing Record) -> ConnectionKey
  private let time: (borrowing Record) -> Int64
  private let tags: WritableKeyPath<Record, RecordTags>
  /// Held records in arrival order, in chunks so that neither growth nor release copies them;
  /// released ones are nil until their whole chunk is dropped.
  private var chunks: [[Held?]] = []
  private static var chunkSize: Int { 4096 }
  /// Position of `chunks[0][0]` in the sequence of all records ever held.
  private var base = 0
  /// Position of the next record to release and of the next one to hold.
  private var front = 0
  private var back = 0
  private var byKey: [ConnectionKey: [Int]] = [:]
  /// Records that can have no partner, waiting to be handed over.
  private var unlinkable: [(source: Int, record: Record)] = []
  public private(set) var count = 0

  init(
    key: @escaping (borrowing Record) -> ConnectionKey, time: @escaping (borrowing Record) -> Int64,
    tags: WritableKeyPath<Record, RecordTags>
  ) {
    self.key = key
    self.time = time
    self.tags = tags
  }

  private subscript(position: Int) -> Held? {
    get { chunks[(position - base) / Self.chunkSize][(position - base) % Self.chunkSize] }
    set { chunks[(position - base) / Self.chunkSize][(position - base) % Self.chunkSize] = newValue }
  }

  /// Adds a record from capture `source`, stamped with that capture's clock when it was emitted,
  /// and links it with the held records of the same connection. A record whose server is neither
  /// a Service nor a pod can have no partner and is not held.
  public mutating func add(_ record: Record, source: Int, stamp: Int64) {
    guard [.service, .nodePort, .pod].contains(record[keyPath: tags].server.kind) else {
      unlinkable.append((source, record))
      count += 1
      return
    }
    var record = record
    let connection = key(record)
    if let partners = byKey[connection] {
      for partner in partners {
        guard var other = self[partner] else { continue }
        guard abs(time(record) - time(other.record)) < Self.pairingMicros else { continue }
        link(&record, &other.record)
        link(&other.record, &record)
        self[partner] = other
      }
    }
    if (back - base) / Self.chunkSize == chunks.count {
      chunks.append([])
      chunks[chunks.count - 1].reserveCapacity(Self.chunkSize)
    }
    chunks[chunks.count - 1].append(Held(record: record, source: source, stamp: stamp))
    byKey[connection, default: []].append(back)
    back += 1
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

  /// Hands over the records that can have no partner, then, in arrival order, the held records
  /// stamped before `watermark`: every capture's clock has passed them by the window, so no
  /// partner can still arrive.
  public mutating func release(before watermark: Int64, into body: (_ source: Int, _ record: Record) -> Void) {
    releaseUnlinkable(into: body)
    while front < back, let first = self[front], first.stamp < watermark { releaseFront(first, into: body) }
    dropReleasedChunks()
  }

  /// Hands over every record (all captures have ended).
  public mutating func releaseAll(into body: (_ source: Int, _ record: Record) -> Void) {
    releaseUnlinkable(into: body)
    while front < back {
      if let first = self[front] { releaseFront(first, into: body) } else { front += 1 }
    }
    dropReleasedChunks()
  }

  private mutating func releaseUnlinkable(into body: (Int, Record) -> Void) {
    for (source, record) in unlinkable { body(source, record) }
    count -= unlinkable.count
    unlinkable.removeAll(keepingCapacity: true)
  }

  private mutating func releaseFront(_ first: Held, into body: (Int, Record) -> Void) {
    let connection = key(first.record)
    if var positions = byKey[connection] {
      positions.removeAll { $0 == front }
      byKey[connection] = positions.isEmpty ? nil : positions
    }
    self[front] = nil
    front += 1
    count -= 1
    // A chunk is freed as soon as it is emptied, so releasing everything never holds twice.
    if (front - base) % Self.chunkSize == 0 { dropReleasedChunks() }
    body(first.source, first.record)
  }

  /// Frees the chunks whose records were all handed over.
  private mutating func dropReleasedChunks() {
    let whole = (front - base) / Self.chunkSize
    guard whole > 0 else { return }
    chunks.removeFirst(whole)
    base += whole * Self.chunkSize
  }
}

extension DNATLinker where Record == TaggedFlow {
  public static func flows() -> DNATLinker<TaggedFlow> {
    DNATLinker(
      key: {
        ConnectionKey(
          clientIP: $0.flow.clientIP, clientPort: $0.flow.clientPort, protocolCode: $0.flow.l4Protocol.rawValue)
      },
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
