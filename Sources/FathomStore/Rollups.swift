import FathomKube
import FathomRecords

#if canImport(Glibc)
  import Glibc
#endif

/// A mergeable latency histogram: exact below 16 µs, then 8 log-linear sub-buckets per power of
/// two (at most 1/16 = 6.25% from a bucket's midpoint to its edges). Sparse; merges by adding.
public struct LatencyHistogram: Sendable, Equatable {
  struct Entry: Sendable {
    var bucket: Int32
    var count: UInt64
  }

  /// (bucket, count) pairs sorted by bucket, counts > 0: a rollup holds a few buckets, and a small
  /// sorted list adds, merges and encodes without the hashing of a dictionary. The first four
  /// are kept in place: a 1 s rollup holds ~3 requests in store-bench, and an array of its own
  /// was an allocation each (~360 instructions, callgrind). More than four go to `spilled`, which
  /// then holds them all.
  private var head = InlineArray<4, Entry>(repeating: Entry(bucket: 0, count: 0))
  private var headCount = 0
  private var spilled: [Entry] = []

  public init() {}

  /// The number of buckets used.
  var entryCount: Int { spilled.isEmpty ? headCount : spilled.count }

  @inline(__always) func entry(_ index: Int) -> Entry { spilled.isEmpty ? head[index] : spilled[index] }

  public static func == (lhs: LatencyHistogram, rhs: LatencyHistogram) -> Bool {
    guard lhs.entryCount == rhs.entryCount else { return false }
    for index in 0..<lhs.entryCount {
      let (left, right) = (lhs.entry(index), rhs.entry(index))
      if left.bucket != right.bucket || left.count != right.count { return false }
    }
    return true
  }

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

  public mutating func add(_ micros: Int64, count: UInt64 = 1) { add(bucket: Int32(Self.bucket(micros)), count: count) }

  private mutating func add(bucket: Int32, count: UInt64) {
    guard count > 0 else { return }
    guard spilled.isEmpty else {
      // Past four buckets (1 min rollups): a new bucket is rare beside counting into one.
      var index = spilled.count
      while index > 0 && spilled[index - 1].bucket > bucket { index -= 1 }
      if index > 0 && spilled[index - 1].bucket == bucket {
        spilled[index - 1].count += count
      } else {
        spilled.insert(Entry(bucket: bucket, count: count), at: index)
      }
      return
    }
    var index = headCount
    while index > 0 && head[index - 1].bucket > bucket { index -= 1 }
    if index > 0 && head[index - 1].bucket == bucket {
      head[index - 1].count += count
    } else if headCount < head.count {
      var position = headCount
      while position > index {
        head[position] = head[position - 1]
        position -= 1
      }
      head[index] = Entry(bucket: bucket, count: count)
      headCount += 1
    } else {
      spilled.reserveCapacity(8)
      for position in 0..<headCount {
        if position == index { spilled.append(Entry(bucket: bucket, count: count)) }
        spilled.append(head[position])
      }
      if index == headCount { spilled.append(Entry(bucket: bucket, count: count)) }
      headCount = 0
    }
  }

  public mutating func merge(_ other: LatencyHistogram) {
    for index in 0..<other.entryCount {
      let entry = other.entry(index)
      add(bucket: entry.bucket, count: entry.count)
    }
  }

  public var total: UInt64 { (0..<entryCount).reduce(0) { $0 + entry($1).count } }

  /// The value at rank floor(p × n) of the sorted samples, to the bucket's precision.
  public func quantile(_ p: Double) -> Int64 {
    let n = total
    guard n > 0 else { return 0 }
    let rank = min(n - 1, UInt64(Double(n) * p))
    var seen: UInt64 = 0
    for index in 0..<entryCount {
      let entry = entry(index)
      seen += entry.count
      if seen > rank { return Self.value(Int(entry.bucket)) }
    }
    return 0
  }

  /// `bucket:count` pairs, comma separated (the stores keep histograms as text).
  public var encoded: String {
    var buffer = OutputBuffer(capacity: 64)
    appendEncoded(to: &buffer)
    return buffer.string
  }

  /// `encoded`, written into a buffer without building Strings.
  public func appendEncoded(to buffer: inout OutputBuffer) {
    for index in 0..<entryCount {
      let entry = entry(index)
      if index > 0 { buffer.append(byte: UInt8(ascii: ",")) }
      buffer.append(UInt64(entry.bucket))
      buffer.append(byte: UInt8(ascii: ":"))
      buffer.append(entry.count)
    }
  }

  public init(encoded: String) {
    for pair in encoded.split(separator: ",") {
      let parts = pair.split(separator: ":")
      if parts.count == 2, let bucket = Int32(parts[0]), bucket >= 0, let count = UInt64(parts[1]) {
        add(bucket: bucket, count: count)
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

  public init() {}

  mutating func add(_ request: borrowing RequestLog) {
    requests += 1
    switch request.status {
    case .timeout: timeouts += 1
    case .clientError: clientErrors += 1
    case .serverError: serverErrors += 1
    default: break
    }
    if request.status != .timeout {
      responses += 1
      latencySum += request.durationMicros
      latencyMax = max(latencyMax, request.durationMicros)
      histogram.add(request.durationMicros)
    }
  }
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

  public init() {}

  mutating func add(_ flow: borrowing FlowLog) {
    bytes += flow.clientToServer.l3Bytes + flow.serverToClient.l3Bytes
    packets += flow.clientToServer.packets + flow.serverToClient.packets
    if flow.reportIndex == 0 { newFlows += 1 }
    if flow.isFinal { closedFlows += 1 }
    retransmissions += UInt64(flow.clientToServer.retransmissions + flow.serverToClient.retransmissions)
    zeroWindows += UInt64(flow.clientToServer.zeroWindows + flow.serverToClient.zeroWindows)
    if flow.rttMicros > 0 {
      rttSum += UInt64(flow.rttMicros)
      rttCount += 1
      rttMax = max(rttMax, UInt64(flow.rttMicros))
    }
    switch flow.closeType {
    case .clientSynRepeat, .serverSynAckRepeat, .serverReset, .icmpUnreachable, .clientEstablishReset,
      .serverEstablishReset, .serverQueueLack:
      establishFailures += 1
    case .clientRst, .serverRst:
      resets += 1
    default:
      break
    }
  }
}

/// A rollup's aggregates, empty when made.
public protocol RollupValue: Sendable {
  init()
}

extension RequestRollup: RollupValue {}
extension FlowRollup: RollupValue {}

/// A rollup key reduced to words for `RollupTable`'s hash.
public protocol RollupKey: Equatable, Sendable {
  /// A well-mixed hash of every field (fields packed so no two keys share their words).
  var rollupHash: UInt64 { get }
}

/// Mixes one more word into a hash (multiply and fold, as in wyhash's final step): rollups are
/// looked up twice per record, and SipHash through `Hasher` cost more than the rest of an update.
@inline(__always) func mix(_ hash: UInt64, _ word: UInt64) -> UInt64 {
  let product = (hash ^ word).multipliedFullWidth(by: 0x9E37_79B9_7F4A_7C15)
  return product.high ^ product.low
}

extension RequestRollupKey: RollupKey {
  public var rollupHash: UInt64 {
    var hash = mix(0x243F_6A88_85A3_08D3, UInt64(bitPattern: intervalStart))
    hash = mix(hash, UInt64(UInt32(bitPattern: clientPod)) << 32 | UInt64(UInt32(bitPattern: serverPod)))
    hash = mix(hash, UInt64(UInt32(bitPattern: clientService)) << 32 | UInt64(UInt32(bitPattern: serverService)))
    return mix(hash, UInt64(protocolCode) << 40 | UInt64(observationPoint) << 32 | UInt64(UInt32(bitPattern: endpoint)))
  }
}

extension FlowRollupKey: RollupKey {
  public var rollupHash: UInt64 {
    var hash = mix(0x243F_6A88_85A3_08D3, UInt64(bitPattern: intervalStart))
    hash = mix(hash, UInt64(UInt32(bitPattern: clientPod)) << 32 | UInt64(UInt32(bitPattern: serverPod)))
    return mix(
      hash, UInt64(UInt32(bitPattern: serverService)) << 16 | UInt64(observationPoint) << 8 | UInt64(l4Protocol))
  }
}

/// The rollups of one resolution: keys and values in insertion order, found through an
/// open-addressing index of positions. Growing rebuilds only the index (a Dictionary moved every
/// key and rollup at each doubling), and stores read the rows as two arrays.
public struct RollupTable<Key: RollupKey, Value: RollupValue>: Sendable, Sequence {
  public private(set) var keys: [Key] = []
  /// Updated in place by the builder.
  public internal(set) var values: [Value] = []
  /// Positions into `keys`/`values`, -1 for an empty slot; a power of two, at most half full.
  private var slots: [Int32] = []

  public init() {}

  public var count: Int { keys.count }

  public var underestimatedCount: Int { keys.count }
  public var isEmpty: Bool { keys.isEmpty }

  /// The position of `key`, inserted with `make()` if it is new.
  @inline(__always) mutating func position(of key: Key, inserting make: () -> Value) -> Int {
    if keys.count * 2 >= slots.count { grow() }
    let mask = slots.count - 1
    var slot = Int(truncatingIfNeeded: key.rollupHash) & mask
    while true {
      let position = Int(slots[slot])
      if position < 0 { break }
      if keys[position] == key { return position }
      slot = (slot + 1) & mask
    }
    slots[slot] = Int32(keys.count)
    keys.append(key)
    values.append(make())
    return keys.count - 1
  }

  private mutating func grow() { rebuildSlots(capacity: Swift.max(64, slots.count * 2)) }

  /// The index for the keys held, at most half full.
  private mutating func rebuildSlots() {
    var capacity = 64
    while capacity < keys.count * 2 + 2 { capacity *= 2 }
    rebuildSlots(capacity: capacity)
  }

  private mutating func rebuildSlots(capacity: Int) {
    precondition(capacity <= Int(Int32.max), "rollup table over 2^31 entries")
    slots = [Int32](repeating: -1, count: capacity)
    let mask = capacity - 1
    for (position, key) in keys.enumerated() {
      var slot = Int(truncatingIfNeeded: key.rollupHash) & mask
      while slots[slot] >= 0 { slot = (slot + 1) & mask }
      slots[slot] = Int32(position)
    }
  }

  /// Splits the rows in two by `isTaken`: those it takes go into the returned table (in no
  /// particular order), the others stay in theirs. Rollups are moved, never copied: a copy
  /// retained each histogram and its release freed it later, a cache miss each for the 1 s
  /// rollups of 200,000 records at every look for closed intervals.
  mutating func take(where isTaken: (Key) -> Bool) -> RollupTable {
    // Kept rows to the front in order, taken ones behind them. Values are swapped through a
    // buffer pointer, which moves them: Array's swapAt copied each (a retain of its histogram).
    var kept = 0
    values.withUnsafeMutableBufferPointer { values in
      for position in keys.indices where !isTaken(keys[position]) {
        if position != kept {
          keys.swapAt(position, kept)
          values.swapAt(position, kept)
        }
        kept += 1
      }
    }
    var taken = RollupTable()
    let count = keys.count - kept
    guard count > 0 else { return taken }
    taken.keys = Array(keys[kept...])
    taken.values = [Value](unsafeUninitializedCapacity: count) { tail, initialized in
      values.withUnsafeMutableBufferPointer { all in
        let moved = all.baseAddress! + kept
        tail.baseAddress!.moveInitialize(from: moved, count: count)
        // The slots moved from hold empty rollups until they are removed below.
        moved.initialize(repeating: Value(), count: count)
      }
      initialized = count
    }
    keys.removeSubrange(kept...)
    values.removeSubrange(kept...)
    rebuildSlots()
    taken.rebuildSlots()
    return taken
  }

  public func makeIterator() -> Zip2Sequence<[Key], [Value]>.Iterator { zip(keys, values).makeIterator() }
}

/// Aggregates tagged records into 1 s and 1 min rollups at ingest, so queries read rollups
/// instead of scanning logs. Rows are partial aggregates; stores sum them (histograms merge).
public struct RollupBuilder: Sendable {
  public static let resolutions: [Int64] = [1, 60]
  /// Per resolution, in the order of `resolutions`.
  private var requests = resolutions.map { _ in RollupTable<RequestRollupKey, RequestRollup>() }
  private var flows = resolutions.map { _ in RollupTable<FlowRollupKey, FlowRollup>() }
  /// Endpoints seen, interned so keys hash no strings per record.
  public private(set) var endpoints: [String] = []
  private var endpointIndex: [String: Int32] = [:]
  private var lastEndpoint: Int32 = -1
  static let points = ObservationPoint.allCases

  public init() {}

  /// The request rollups of one of `resolutions`.
  public func requestRollups(_ resolution: Int64) -> RollupTable<RequestRollupKey, RequestRollup> {
    Self.resolutions.firstIndex(of: resolution).map { requests[$0] } ?? RollupTable()
  }

  /// The flow rollups of one of `resolutions`.
  public func flowRollups(_ resolution: Int64) -> RollupTable<FlowRollupKey, FlowRollup> {
    Self.resolutions.firstIndex(of: resolution).map { flows[$0] } ?? RollupTable()
  }

  static func pointCode(_ point: ObservationPoint) -> UInt8 { UInt8(points.firstIndex(of: point) ?? 0) }
  public static func point(_ code: UInt8) -> ObservationPoint { points[Int(code)] }

  mutating func intern(_ texts: RequestTexts) -> Int32 {
    // Consecutive requests mostly share an endpoint: comparing its bytes with the last one is
    // cheaper than making a String and hashing it.
    if lastEndpoint >= 0 {
      let endpoint = texts.unsafeFields[.endpoint]
      let same =
        endpoints[Int(lastEndpoint)].utf8.withContiguousStorageIfAvailable { known in
          known.count == endpoint.count
            && (known.isEmpty || memcmp(known.baseAddress!, endpoint.baseAddress!, known.count) == 0)
        } ?? false
      if same { return lastEndpoint }
    }
    let endpoint = texts[.endpoint]
    if let index = endpointIndex[endpoint] {
      lastEndpoint = index
      return index
    }
    let index = Int32(endpoints.count)
    lastEndpoint = index
    endpoints.append(endpoint)
    endpointIndex[endpoint] = index
    return index
  }

  /// Takes out the rollups of every interval that ended by `micros`, leaving the others: written
  /// early they are partial rows like any other (stores sum and merge rows of one interval), so a
  /// long analysis keeps only recent intervals in memory. A record that comes later for a taken
  /// interval simply starts a new partial row.
  public mutating func takeIntervals(endedBy micros: Int64) -> RollupBuilder {
    var taken = RollupBuilder()
    taken.endpoints = endpoints
    taken.endpointIndex = endpointIndex
    let second = micros / 1_000_000
    for (position, resolution) in Self.resolutions.enumerated() {
      taken.requests[position] = requests[position].take { $0.intervalStart + resolution <= second }
      taken.flows[position] = flows[position].take { $0.intervalStart + resolution <= second }
    }
    return taken
  }

  /// True when no rollup is held.
  public var isEmpty: Bool { requests.allSatisfy(\.isEmpty) && flows.allSatisfy(\.isEmpty) }

  /// Borrowed, like `SourceRollups.add`: a copy of the record retained its texts and answers.
  public mutating func add(_ tagged: borrowing TaggedRequest) {
    let endpoint = intern(tagged.request.texts)
    let point = Self.pointCode(tagged.tags.observationPoint)
    let second = tagged.request.startMicros / 1_000_000
    for (index, resolution) in Self.resolutions.enumerated() {
      let key = RequestRollupKey(
        intervalStart: second / resolution * resolution,
        clientPod: tagged.tags.client.pod, clientService: tagged.tags.client.service,
        serverPod: tagged.tags.server.pod, serverService: tagged.tags.server.service,
        protocolCode: tagged.request.applicationProtocol.rawValue, observationPoint: point, endpoint: endpoint)
      let position = requests[index].position(of: key) { RequestRollup() }
      requests[index].values[position].add(tagged.request)
    }
  }

  public mutating func add(_ tagged: borrowing TaggedFlow) {
    let point = Self.pointCode(tagged.tags.observationPoint)
    let second = tagged.flow.startMicros / 1_000_000
    for (index, resolution) in Self.resolutions.enumerated() {
      let key = FlowRollupKey(
        intervalStart: second / resolution * resolution,
        clientPod: tagged.tags.client.pod, serverPod: tagged.tags.server.pod,
        serverService: tagged.tags.server.service, observationPoint: point,
        l4Protocol: tagged.flow.l4Protocol.rawValue)
      let position = flows[index].position(of: key) { FlowRollup() }
      flows[index].values[position].add(tagged.flow)
    }
  }
}

/// The rollups of one source while its records are stored: every `checkEvery` records, the
/// intervals that ended `closeAfterMicros` before its newest record are written and let go (a
/// long analysis keeps only recent intervals in memory, and their rows are written while records
/// still arrive); the rest when the source ends. `fathom analyze` and store-bench both write
/// rollups this way.
public struct SourceRollups: Sendable {
  /// Records reach the writer up to ~12 min after they start (a flow's last report, then the
  /// DNAT window); a record that comes later for a written interval only adds a partial row.
  public static let closeAfterMicros: Int64 = 15 * 60_000_000
  public let source: Int64
  /// Records between two looks for closed intervals (200,000 in `fathom analyze`).
  public let checkEvery: Int
  private var builder = RollupBuilder()
  private var newestStart = Int64.min
  private var sinceCheck = 0

  public init(source: Int64, checkEvery: Int = 200_000) {
    self.source = source
    self.checkEvery = max(1, checkEvery)
  }

  /// Borrows the record: callers pass array elements in place (`records[index]`), since a copy
  /// (a `for record in records` loop) retained and released its texts and answers.
  public mutating func add(_ tagged: borrowing TaggedRequest) {
    builder.add(tagged)
    newestStart = max(newestStart, tagged.request.startMicros)
    sinceCheck += 1
  }

  public mutating func add(_ tagged: borrowing TaggedFlow) {
    builder.add(tagged)
    newestStart = max(newestStart, tagged.flow.startMicros)
    sinceCheck += 1
  }

  /// Writes the closed intervals when `checkEvery` records came since the last check.
  public mutating func writeClosed(to store: RecordStore, ids: [Int32: Int64]) throws {
    guard sinceCheck >= checkEvery else { return }
    sinceCheck = 0
    let closed = builder.takeIntervals(endedBy: newestStart - Self.closeAfterMicros)
    if !closed.isEmpty { try store.write(rollups: closed, source: source, ids: ids) }
  }

  /// Writes every interval still held (the source's end).
  public mutating func writeAll(to store: RecordStore, ids: [Int32: Int64]) throws {
    if !builder.isEmpty { try store.write(rollups: builder, source: source, ids: ids) }
    builder = RollupBuilder()
  }
}
