import FathomRecords

/// The SQLite store's index of lookup keys: a request's X-Request-ID and trace id, found again by
/// trace assembly (schema v10).
///
/// The keys are random (nginx's `$request_id`, W3C trace ids), and a B-tree index on them cost
/// SQLite about a microsecond per key — a binary search of record comparisons down the tree for
/// each of a million and a half keys per million requests, 40% of the writer's time even with the
/// index led by the batch's block. Here a batch's keys are hashed and spread over `buckets`
/// buckets on the caller's thread, and each bucket is one row of `request_keys`: (the batch's
/// lookup block, bucket, its entries as a blob of (key hash, request start) pairs). A batch of
/// 10,000 requests becomes ~256 rows appended at the end of `request_keys_block`, about 60 keys a
/// row. A lookup reads the key's bucket in every lookup block (one seek each, like the indexes
/// it replaces), then the requests at the listed start times through the time index, where the
/// key itself is compared: a hash that two keys share costs a row read, never a wrong answer.
enum RequestKeys {
  /// The two kinds of keys, hashed apart so that an X-Request-ID never finds a trace id.
  enum Kind: UInt8 {
    case requestID = 1
    case traceID = 2
  }

  /// Buckets per lookup block: the top 8 bits of the hash.
  static let bucketBits = 8
  static let buckets = 1 << bucketBits
  /// Requests whose keys share one set of bucket rows: ~128 keys and 2 KiB a row at most on
  /// average (a 32 KiB page holds up to ~8 KiB of a row before it spills to overflow pages).
  static let requestsPerRowSet = 16_384
  /// Bytes per entry: the key's hash and the request's start (microseconds), little-endian.
  static let entryBytes = 16

  /// FNV-1a (64-bit) over the kind byte and the key's UTF-8 bytes, finished with MurmurHash3's
  /// 64-bit mix so every bit (the bucket's top 8 among them) depends on every input byte. Stored in
  /// files: changing it makes existing keys unfindable (a known-answer test pins it).
  static func hash(_ kind: Kind, _ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    hash = (hash ^ UInt64(kind.rawValue)) &* 0x0000_0100_0000_01b3
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
    hash ^= hash >> 33
    hash &*= 0xff51_afd7_ed55_8ccd
    hash ^= hash >> 33
    hash &*= 0xc4ce_b9fe_1a85_ec53
    hash ^= hash >> 33
    return hash
  }

  static func hash(_ kind: Kind, _ key: String) -> UInt64 {
    var key = key
    return key.withUTF8 { hash(kind, UnsafeRawBufferPointer($0)) }
  }

  static func bucket(_ hash: UInt64) -> Int { Int(hash >> UInt64(64 - bucketBits)) }

  /// The start times of the entries in one bucket row whose hash is `hash`.
  static func starts(matching hash: UInt64, in entries: UnsafeRawBufferPointer) -> [Int64] {
    var starts: [Int64] = []
    var offset = 0
    while offset + entryBytes <= entries.count {
      if entries.loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian == hash {
        starts.append(Int64(littleEndian: entries.loadUnaligned(fromByteOffset: offset + 8, as: Int64.self)))
      }
      offset += entryBytes
    }
    return starts
  }

  /// One batch's keys, gathered as its requests are encoded, as rows of `request_keys`: every
  /// `requestsPerRowSet` requests' keys become one row per bucket.
  struct Batch {
    /// The rows so far; complete after `finish`.
    let rows: RowBlock
    private let block: Int64
    private var hashes: [UInt64] = []
    private var starts: [Int64] = []
    /// Requests whose keys are not yet in `rows`.
    private(set) var requests = 0

    /// `requests` sizes the buffers (the batch may hold more).
    init(block: Int64, requests: Int) {
      self.block = block
      rows = RowBlock(
        table: "request_keys (lookup_block, bucket, entries)", columns: 3,
        rows: RequestKeys.buckets * (requests / RequestKeys.requestsPerRowSet + 1))
      hashes.reserveCapacity(2 * Swift.min(requests, RequestKeys.requestsPerRowSet))
      starts.reserveCapacity(2 * Swift.min(requests, RequestKeys.requestsPerRowSet))
    }

    /// One request's keys: its X-Request-ID (the response's where the request carried none) and
    /// its trace id; empty ones are not filed.
    mutating func add(
      requestID: UnsafeRawBufferPointer, responseRequestID: UnsafeRawBufferPointer,
      traceID: UnsafeRawBufferPointer, start: Int64
    ) {
      if requests == RequestKeys.requestsPerRowSet { writeRowSet() }
      add(.requestID, requestID.isEmpty ? responseRequestID : requestID, start: start)
      add(.traceID, traceID, start: start)
      requests += 1
    }

    mutating func add(_ request: RequestLog) {
      request.texts.withUTF8(.requestID) { requestID in
        request.texts.withUTF8(.responseRequestID) { responseRequestID in
          request.texts.withUTF8(.traceID) { traceID in
            add(
              requestID: requestID, responseRequestID: responseRequestID, traceID: traceID,
              start: request.startMicros)
          }
        }
      }
    }

    /// The rows, the last requests' keys included.
    mutating func finish() -> RowBlock {
      writeRowSet()
      return rows
    }

    private mutating func add(_ kind: Kind, _ key: UnsafeRawBufferPointer, start: Int64) {
      guard !key.isEmpty else { return }
      hashes.append(RequestKeys.hash(kind, key))
      starts.append(start)
    }

    /// One row (lookup block, bucket, entries) per bucket holding a key, in bucket order (so a
    /// batch's rows append to the end of the index); entries grouped by a counting sort.
    private mutating func writeRowSet() {
      var ends = [Int](repeating: 0, count: RequestKeys.buckets + 1)
      for hash in hashes { ends[RequestKeys.bucket(hash) + 1] += 1 }
      for bucket in 0..<RequestKeys.buckets { ends[bucket + 1] += ends[bucket] }
      var next = ends
      var order = [Int](repeating: 0, count: hashes.count)
      for (index, hash) in hashes.enumerated() {
        let bucket = RequestKeys.bucket(hash)
        order[next[bucket]] = index
        next[bucket] += 1
      }
      for bucket in 0..<RequestKeys.buckets where ends[bucket + 1] > ends[bucket] {
        rows.int(block)
        rows.int(bucket)
        rows.blob { buffer in
          for index in order[ends[bucket]..<ends[bucket + 1]] {
            buffer.appendLittleEndian(hashes[index])
            buffer.appendLittleEndian(UInt64(bitPattern: starts[index]))
          }
        }
        rows.endRow()
      }
      hashes.removeAll(keepingCapacity: true)
      starts.removeAll(keepingCapacity: true)
      requests = 0
    }
  }
}
