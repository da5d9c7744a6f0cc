/// HPACK (RFC 7541): header block decoding with a dynamic table per direction, bounded.
struct HPACKDecoder {
  struct Field {
    var name: [UInt8]
    var value: [UInt8]
    var size: Int { name.count + value.count + 32 }
  }

  enum Failure: Error { case truncated, badIndex, tooLarge, badHuffman }

  /// Newest entry first, as HPACK indexes them.
  private(set) var dynamic: [Field] = []
  private var dynamicSize = 0
  private(set) var maxSize = 4096
  /// For a capture that began mid-connection: the dynamic table's earlier entries are unknown, so
  /// references to them are skipped instead of failing the block.
  var tolerateMissingEntries = false
  /// Upper bound on what a peer may set: a hostile size update cannot make the table unbounded.
  static let sizeLimit = 64 * 1024
  static let maxStringBytes = 64 * 1024

  /// Decodes a header block; `visit` receives each field. Entries the block adds to the dynamic
  /// table are added even when `visit` ignores them, so later blocks stay in step.
  mutating func decode(_ block: UnsafeRawBufferPointer, visit: (_ name: [UInt8], _ value: [UInt8]) -> Void) throws {
    var offset = 0
    while offset < block.count {
      let first = block[offset]
      if first & 0x80 != 0 {
        let index = try Self.integer(block, &offset, prefixBits: 7)
        if let field = try entry(index) { visit(field.name, field.value) }
      } else if first & 0x40 != 0 {
        let field = try literal(block, &offset, prefixBits: 6)
        if !field.name.isEmpty { visit(field.name, field.value) }
        insert(field)
      } else if first & 0x20 != 0 {
        let size = try Self.integer(block, &offset, prefixBits: 5)
        guard size <= Self.sizeLimit else { throw Failure.tooLarge }
        maxSize = size
        evict(toFit: 0)
      } else {
        let field = try literal(block, &offset, prefixBits: 4)  // without indexing / never indexed
        if !field.name.isEmpty { visit(field.name, field.value) }
      }
    }
  }

  /// The entry at an HPACK index; nil for an unknown one when missing entries are tolerated.
  private func entry(_ index: Int) throws -> Field? {
    guard index > 0 else { throw Failure.badIndex }
    if index <= Self.staticTable.count {
      let (name, value) = Self.staticTable[index - 1]
      return Field(name: Array(name.utf8), value: Array(value.utf8))
    }
    let dynamicIndex = index - Self.staticTable.count - 1
    guard dynamicIndex < dynamic.count else {
      if tolerateMissingEntries { return nil }
      throw Failure.badIndex
    }
    return dynamic[dynamicIndex]
  }

  private func literal(_ block: UnsafeRawBufferPointer, _ offset: inout Int, prefixBits: Int) throws -> Field {
    let nameIndex = try Self.integer(block, &offset, prefixBits: prefixBits)
    // An unknown name (mid-connection capture) still takes its place in the table.
    let name = nameIndex == 0 ? try Self.string(block, &offset) : try entry(nameIndex)?.name ?? []
    let value = try Self.string(block, &offset)
    return Field(name: name, value: value)
  }

  private mutating func insert(_ field: Field) {
    guard field.size <= maxSize else {
      // An entry larger than the table empties it (RFC 7541, 4.4).
      dynamic.removeAll()
      dynamicSize = 0
      return
    }
    evict(toFit: field.size)
    dynamic.insert(field, at: 0)
    dynamicSize += field.size
  }

  private mutating func evict(toFit size: Int) {
    while dynamicSize + size > maxSize, let last = dynamic.popLast() { dynamicSize -= last.size }
  }

  /// An HPACK integer with an N-bit prefix (RFC 7541, 5.1), bounded to 2^28.
  static func integer(_ block: UnsafeRawBufferPointer, _ offset: inout Int, prefixBits: Int) throws -> Int {
    guard offset < block.count else { throw Failure.truncated }
    let mask = (1 << prefixBits) - 1
    var value = Int(block[offset]) & mask
    offset += 1
    guard value == mask else { return value }
    var shift = 0
    while true {
      guard offset < block.count else { throw Failure.truncated }
      let byte = block[offset]
      offset += 1
      value += Int(byte & 0x7F) << shift
      shift += 7
      guard shift <= 28 else { throw Failure.tooLarge }
      if byte & 0x80 == 0 { return value }
    }
  }

  static func string(_ block: UnsafeRawBufferPointer, _ offset: inout Int) throws -> [UInt8] {
    guard offset < block.count else { throw Failure.truncated }
    let huffman = block[offset] & 0x80 != 0
    let length = try integer(block, &offset, prefixBits: 7)
    guard length <= maxStringBytes else { throw Failure.tooLarge }
    guard offset + length <= block.count else { throw Failure.truncated }
    let bytes = UnsafeRawBufferPointer(rebasing: block[offset..<(offset + length)])
    offset += length
    return huffman ? try HuffmanCode.decode(bytes) : Array(bytes)
  }

  /// RFC 7541, Appendix A.
  static let staticTable: [(String, String)] = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
    ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""),
    ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""),
    ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
    ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
    ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""),
    ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
  ]
}

/// The HPACK Huffman code (RFC 7541, Appendix B). The code is canonical, so the bit length of
/// each symbol (0-255, and 256 = EOS) determines every code; only the lengths are listed.
enum HuffmanCode {
  static let lengths: [UInt8] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
  ]

  /// Per code length: the first code of that length and where its symbols start in `symbols`.
  struct Canonical {
    var firstCode = [UInt32](repeating: 0, count: 31)
    var count = [Int](repeating: 0, count: 31)
    var offset = [Int](repeating: 0, count: 31)
    var symbols: [Int] = []
  }

  static let canonical: Canonical = {
    var table = Canonical()
    table.symbols = (0..<257).sorted { (lengths[$0], $0) < (lengths[$1], $1) }
    for length in lengths { table.count[Int(length)] += 1 }
    var code: UInt32 = 0
    var index = 0
    for length in 1...30 {
      code <<= 1
      table.firstCode[length] = code
      table.offset[length] = index
      code += UInt32(table.count[length])
      index += table.count[length]
    }
    return table
  }()

  /// Decodes a Huffman-coded string; padding must be the EOS prefix (all ones, under 8 bits).
  static func decode(_ bytes: UnsafeRawBufferPointer) throws -> [UInt8] {
    let table = canonical
    var output: [UInt8] = []
    output.reserveCapacity(bytes.count * 8 / 5)
    var code: UInt32 = 0
    var length = 0
    var allOnes = true
    for byte in bytes {
      for shift in stride(from: 7, through: 0, by: -1) {
        let bit = UInt32(byte >> UInt8(shift)) & 1
        code = code << 1 | bit
        length += 1
        allOnes = allOnes && bit == 1
        guard length <= 30 else { throw HPACKDecoder.Failure.badHuffman }
        let position = Int(code) - Int(table.firstCode[length])
        if position >= 0 && position < table.count[length] {
          let symbol = table.symbols[table.offset[length] + position]
          guard symbol != 256 else { throw HPACKDecoder.Failure.badHuffman }
          output.append(UInt8(symbol))
          code = 0
          length = 0
          allOnes = true
        }
      }
    }
    guard length < 8 && allOnes else { throw HPACKDecoder.Failure.badHuffman }
    return output
  }
}
