import Foundation
import Yams

/// Reads Kubernetes objects from the shapes users have: one object, a `List` (`kubectl get -o
/// json|yaml`), an API list response (`PodList`, whose items carry no kind), or a YAML stream of
/// several documents. JSON is read by Foundation, YAML by Yams; both decode into the same model.
public enum KubeDecoder {
  public struct Failure: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
  }

  /// Decodes `text`; `kindHint` names the kind of objects that carry none (API list items are
  /// covered by their list's kind).
  public static func decode(_ text: String, kindHint: String? = nil, source: String = "input") throws -> [KubeObject] {
    let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
    if trimmed.first == "{" || trimmed.first == "[" {
      let tree: Any
      do {
        tree = try JSONSerialization.jsonObject(with: Data(text.utf8))
      } catch {
        throw Failure(message: "\(source): not valid JSON (\(error.localizedDescription))")
      }
      return try objects(in: JSONNode(value: tree), kindHint: kindHint, source: source)
    }
    let documents: [Yams.Node]
    do {
      documents = Array(try Yams.compose_all(yaml: text))
    } catch {
      throw Failure(message: "\(source): not valid YAML (\(error))")
    }
    var result: [KubeObject] = []
    for document in documents {
      result += try objects(in: YAMLNode(node: document), kindHint: kindHint, source: source)
    }
    return result
  }

  public static func decode(file path: String, kindHint: String? = nil) throws -> [KubeObject] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw Failure(message: "cannot read \(path)")
    }
    return try decode(String(decoding: data, as: UTF8.self), kindHint: kindHint, source: path)
  }

  static func objects<Node: DocumentNode>(in node: Node, kindHint: String?, source: String) throws -> [KubeObject] {
    guard node.isMapping else {
      if node.isNull { return [] }
      throw Failure(message: "\(source): a Kubernetes object or list must be a mapping")
    }
    let kind = node.string("kind")
    if let items = node.items {
      // `List` items name their kind; `PodList` items do not.
      let itemKind = kind.flatMap { $0 != "List" && $0.hasSuffix("List") ? String($0.dropLast(4)) : nil } ?? kindHint
      return try items.enumerated().compactMap { index, item in
        try object(item, kind: item.string("kind") ?? itemKind, path: "\(source): items[\(index)]")
      }
    }
    return try object(node, kind: kind ?? kindHint, path: source).map { [$0] } ?? []
  }

  private struct MetadataOnly: Decodable {
    var metadata: ObjectMeta?
  }

  static func object<Node: DocumentNode>(_ node: Node, kind: String?, path: String) throws -> KubeObject? {
    if node.isNull { return nil }
    guard node.isMapping else { throw Failure(message: "\(path): an object must be a mapping") }
    // Metadata is checked for every object, whatever its kind.
    let meta = try decode(MetadataOnly.self, node, path: path).metadata
    guard let kind else { throw Failure(message: "\(path): object without kind") }
    switch kind {
    case "Pod": return .pod(try decode(Pod.self, node, path: path))
    case "Service": return .service(try decode(Service.self, node, path: path))
    case "Endpoints": return .endpoints(try decode(Endpoints.self, node, path: path))
    case "EndpointSlice": return .endpointSlice(try decode(EndpointSlice.self, node, path: path))
    case "Node": return .node(try decode(Node_.self, node, path: path))
    case "Namespace": return .namespace(try decode(Namespace.self, node, path: path))
    case "Ingress": return .ingress(try decode(Ingress.self, node, path: path))
    case "Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job", "CronJob":
      return .workload(kind: kind, try decode(Workload.self, node, path: path))
    default: return .other(kind: kind, meta)
    }
  }

  typealias Node_ = FathomKube.Node

  static func decode<T: Decodable, Node: DocumentNode>(_ type: T.Type, _ node: Node, path: String) throws -> T {
    do {
      return try node.decode(type)
    } catch let error as DecodingError {
      throw Failure(message: "\(path): \(describe(error))")
    }
  }

  static func describe(_ error: DecodingError) -> String {
    func location(_ context: DecodingError.Context) -> String {
      let path = context.codingPath.map { key in key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)" }.joined()
      return path.isEmpty ? "" : String(path.drop { $0 == "." }) + ": "
    }
    switch error {
    case .typeMismatch(let type, let context): return "\(location(context))expected \(typeName(type))"
    case .valueNotFound(let type, let context): return "\(location(context))missing \(typeName(type))"
    case .keyNotFound(let key, let context): return "\(location(context))missing \(key.stringValue)"
    case .dataCorrupted(let context): return "\(location(context))\(context.debugDescription)"
    @unknown default: return "\(error)"
    }
  }

  static func typeName(_ type: Any.Type) -> String {
    let name = String(describing: type)
    if name.hasPrefix("Dictionary") { return "a mapping" }
    if name.hasPrefix("Array") { return "a list" }
    if name == "String" { return "a string" }
    if name == "Int" || name == "Double" { return "a number" }
    if name == "Bool" { return "a boolean" }
    return "a mapping (\(name))"
  }
}

/// A parsed document node, JSON or YAML.
protocol DocumentNode {
  var isMapping: Bool { get }
  var isNull: Bool { get }
  func string(_ key: String) -> String?
  var items: [Self]? { get }
  func decode<T: Decodable>(_ type: T.Type) throws -> T
}

struct JSONNode: DocumentNode {
  let value: Any
  var isMapping: Bool { value is [String: Any] }
  var isNull: Bool { value is NSNull }
  func string(_ key: String) -> String? { (value as? [String: Any])?[key] as? String }
  var items: [JSONNode]? { ((value as? [String: Any])?["items"] as? [Any])?.map { JSONNode(value: $0) } }
  func decode<T: Decodable>(_ type: T.Type) throws -> T {
    try JSONDecoder().decode(type, from: JSONSerialization.data(withJSONObject: value))
  }
}

struct YAMLNode: DocumentNode {
  let node: Yams.Node
  var isMapping: Bool { node.mapping != nil }
  var isNull: Bool { node.null != nil }
  func string(_ key: String) -> String? { node.mapping?[key]?.string }
  var items: [YAMLNode]? { node.mapping?["items"]?.sequence.map { $0.map { YAMLNode(node: $0) } } }
  func decode<T: Decodable>(_ type: T.Type) throws -> T { try YAMLDecoder().decode(type, from: node) }
}
