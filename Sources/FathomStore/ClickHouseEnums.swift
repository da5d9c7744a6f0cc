import FathomKube
import FathomRecords

/// A record field with a small fixed set of names (protocol, observation point, kind, status,
/// close type), stored by ClickHouse as `Enum8`: one byte a row instead of a length and a name.
/// Measured on 18.16 (store-bench, a million requests with their rollups): the server's CPU −14%.
///
/// The codes are stored data. A name keeps its code for good; a new case takes a new code and
/// is added to existing tables when a store opens (`ClickHouseStore.alignColumns`), never
/// renumbered or removed. Code 0 is the empty name in every definition, so a String column
/// converts whatever it holds that Fathom wrote.
protocol ClickHouseEnumValue: CaseIterable {
  /// The name as records and queries spell it.
  var storedName: StaticString { get }
  /// Its code, fixed for good (1...127).
  var storedCode: Int8 { get }
}

extension ClickHouseEnumValue {
  /// The column type, e.g. `Enum8('' = 0, 'c' = 1, ...)`, cases in code order.
  static var clickHouseType: String { ClickHouseEnum.type(ClickHouseEnum.cases(of: Self.self)) }
}

/// Reading and writing `Enum8` definitions.
enum ClickHouseEnum {
  /// (name, code) of every case of `Value`, and the empty name, in code order.
  static func cases<Value: ClickHouseEnumValue>(of _: Value.Type) -> [(name: String, code: Int8)] {
    [("", 0)] + Value.allCases.map { ($0.storedName.description, $0.storedCode) }.sorted { $0.code < $1.code }
  }

  static func type(_ cases: [(name: String, code: Int8)]) -> String {
    let items = cases.map { "'\($0.name.replacingOccurrences(of: "'", with: "\\'"))' = \($0.code)" }
    return "Enum8(\(items.joined(separator: ", ")))"
  }

  /// The cases of a type as `system.columns` shows it (unescaped); nil for anything but `Enum8`.
  static func parse(_ type: String) -> [(name: String, code: Int8)]? {
    guard type.hasPrefix("Enum8("), type.hasSuffix(")") else { return nil }
    var cases: [(name: String, code: Int8)] = []
    var rest = Substring(type.dropFirst(6).dropLast())
    while !rest.isEmpty {
      rest = rest.drop { $0 == " " || $0 == "," }
      guard rest.first == "'" else { return rest.isEmpty ? cases : nil }
      rest = rest.dropFirst()
      var name = ""
      while let character = rest.first, character != "'" {
        rest = rest.dropFirst()
        if character == "\\", let escaped = rest.first {
          name.append(escaped)
          rest = rest.dropFirst()
        } else {
          name.append(character)
        }
      }
      guard rest.first == "'" else { return nil }
      rest = rest.dropFirst().drop { $0 == " " }
      guard rest.first == "=" else { return nil }
      rest = rest.dropFirst().drop { $0 == " " }
      let digits = rest.prefix { $0 == "-" || $0.isNumber }
      guard let code = Int8(digits) else { return nil }
      rest = rest.dropFirst(digits.count)
      cases.append((name, code))
    }
    return cases
  }

  /// What a table's column must become so every case of `wanted` keeps its code: nil when it
  /// already has them all, else the union in code order. Throws when a name or a code is taken
  /// by another — data written with other codes that no conversion can keep.
  static func extended(_ existing: [(name: String, code: Int8)], toHold wanted: [(name: String, code: Int8)]) throws
    -> [(name: String, code: Int8)]?
  {
    var union = existing
    for item in wanted {
      if let same = existing.first(where: { $0.name == item.name }) {
        guard same.code == item.code else {
          throw Conflict(message: "'\(item.name)' has code \(same.code) in the table, \(item.code) in Fathom")
        }
      } else if let other = existing.first(where: { $0.code == item.code }) {
        throw Conflict(message: "code \(item.code) is '\(other.name)' in the table, '\(item.name)' in Fathom")
      } else {
        union.append(item)
      }
    }
    return union.count == existing.count ? nil : union.sorted { $0.code < $1.code }
  }

  struct Conflict: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
  }
}

// MARK: The stored enums and their codes (never renumber)

extension ApplicationProtocol: ClickHouseEnumValue {
  var storedName: StaticString { name }
  var storedCode: Int8 {
    switch self {
    case .http: 1
    case .http2: 2
    case .grpc: 3
    case .dns: 4
    case .redis: 5
    }
  }
}

extension L4Protocol: ClickHouseEnumValue {
  var storedName: StaticString { name }
  var storedCode: Int8 {
    switch self {
    case .tcp: 1
    case .udp: 2
    case .icmp: 3
    case .icmpv6: 4
    }
  }
}

extension ObservationPoint: ClickHouseEnumValue {
  var storedName: StaticString {
    switch self {
    case .client: "c"
    case .clientNode: "c-nd"
    case .serverNode: "s-nd"
    case .server: "s"
    case .local: "local"
    case .rest: "rest"
    }
  }
  var storedCode: Int8 {
    switch self {
    case .client: 1
    case .clientNode: 2
    case .serverNode: 3
    case .server: 4
    case .local: 5
    case .rest: 6
    }
  }
}

extension EndpointIdentity.Kind: ClickHouseEnumValue {
  var storedName: StaticString {
    switch self {
    case .pod: "pod"
    case .node: "node"
    case .service: "service"
    case .nodePort: "node_port"
    case .external: "external"
    }
  }
  var storedCode: Int8 {
    switch self {
    case .pod: 1
    case .node: 2
    case .service: 3
    case .nodePort: 4
    case .external: 5
    }
  }
}

extension RequestStatus: ClickHouseEnumValue {
  var storedName: StaticString { name }
  var storedCode: Int8 {
    switch self {
    case .ok: 1
    case .clientError: 2
    case .serverError: 3
    case .timeout: 4
    case .unknown: 5
    case .parseFailed: 6
    }
  }
}

extension FlowStatus: ClickHouseEnumValue {
  var storedName: StaticString { name }
  var storedCode: Int8 {
    switch self {
    case .ok: 1
    case .clientError: 2
    case .serverError: 3
    case .timeout: 4
    }
  }
}

extension CloseType: ClickHouseEnumValue {
  var storedName: StaticString { name }
  var storedCode: Int8 {
    switch self {
    case .finish: 1
    case .clientRst: 2
    case .serverRst: 3
    case .timeout: 4
    case .clientSynRepeat: 5
    case .serverSynAckRepeat: 6
    case .serverReset: 7
    case .serverQueueLack: 8
    case .clientSourcePortReuse: 9
    case .clientHalfClose: 10
    case .serverHalfClose: 11
    case .clientEstablishReset: 12
    case .serverEstablishReset: 13
    case .forcedReport: 14
    case .inProgress: 15
    case .evicted: 16
    case .idle: 17
    case .icmpUnreachable: 18
    }
  }
}
