import ArgumentParser
import FathomHTTP
import FathomKube
import Foundation

/// `fathom kube watch`: follows the live API (list then watch per resource) and writes the
/// objects' event log that `fathom analyze --cluster-events` reads.
struct KubeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kube", abstract: "Kubernetes API sources.", subcommands: [KubeWatch.self, KubeSnapshot.self])
}

/// How to reach the API server: a kubeconfig, the pod's service account, or a URL with its
/// credentials. Shared by `kube watch` and `kube snapshot`.
struct KubeConnectionOptions: ParsableArguments {
  @Option(help: "kubeconfig file (its current context).") var kubeconfig: String?
  @Flag(help: "Use the pod's service account (in-cluster).") var inCluster = false
  @Option(help: "API server URL (instead of a kubeconfig).") var server: String?
  @Option(help: "Bearer token for --server.") var token: String?
  @Option(help: "PEM file of the CAs that sign the server's certificate, for --server.")
  var certificateAuthority: String?
  @Option(help: "PEM client certificate for --server (with --client-key).") var clientCertificate: String?
  @Option(help: "PEM client key for --server.") var clientKey: String?
  @Flag(help: "Do not verify the server's certificate, for --server.") var insecureSkipTlsVerify = false

  /// The configuration, or the reason there is none on stderr and a failure exit.
  func config(for command: String) throws -> KubeAPIConfig {
    do { return try config() } catch {
      FileHandle.standardError.write(Data("fathom kube \(command): \(error)\n".utf8))
      throw ExitCode.failure
    }
  }

  func config() throws -> KubeAPIConfig {
    if let server {
      var explicit = KubeAPIConfig(server: server, token: token)
      explicit.tls = try TLSSettings(
        authority: certificateAuthority, clientCertificate: clientCertificate, clientKey: clientKey,
        insecure: insecureSkipTlsVerify,
        options: ("--certificate-authority", "--client-certificate", "--client-key"))
      return explicit
    }
    if inCluster { return try KubeAPIConfig.inCluster() }
    let path = kubeconfig ?? ProcessInfo.processInfo.environment["KUBECONFIG"] ?? "\(NSHomeDirectory())/.kube/config"
    return try KubeAPIConfig.kubeconfig(path)
  }
}

/// `fathom kube snapshot`: every resource tagging needs, listed once into one `List` file for
/// `fathom analyze --cluster` — keep it beside captures taken at the same time.
struct KubeSnapshot: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "snapshot",
    abstract: "List pods, Services, Endpoints, nodes, Ingresses and workloads once into a List file for --cluster.")
  @OptionGroup var connection: KubeConnectionOptions
  @Option(help: "Write the List (JSON) to this file.") var out: String

  func run() throws {
    let config = try connection.config(for: "snapshot")
    let (objects, failures) = KubeAPISource(config: config) { _, _ in }.snapshot()
    for failure in failures {
      FileHandle.standardError.write(Data("fathom kube snapshot: \(failure.kind): \(failure.message)\n".utf8))
    }
    guard failures.count < KubeAPISource.Resource.tagging.count else {
      FileHandle.standardError.write(Data("fathom kube snapshot: nothing could be listed\n".utf8))
      throw ExitCode.failure
    }
    let list: [String: Any] = ["apiVersion": "v1", "kind": "List", "items": objects]
    let data = try JSONSerialization.data(withJSONObject: list, options: [.sortedKeys])
    guard FileManager.default.createFile(atPath: out, contents: data) else {
      FileHandle.standardError.write(Data("fathom kube snapshot: cannot write \(out)\n".utf8))
      throw ExitCode.failure
    }
    var kinds: [String: Int] = [:]
    for object in objects { kinds[object["kind"] as? String ?? "?", default: 0] += 1 }
    let counts = kinds.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    FileHandle.standardError.write(Data("\(out): \(objects.count) objects (\(counts))\n".utf8))
  }
}

struct KubeWatch: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "watch",
    abstract: "List and watch pods, Services, Endpoints, nodes, Ingresses and workloads into an event log.")
  @OptionGroup var connection: KubeConnectionOptions
  @Option(help: "Append events (JSON lines) to this file.") var out: String
  @Option(help: "Stop after this many seconds (default: until interrupted).") var duration: Double?

  func run() throws {
    let config = try connection.config(for: "watch")
    guard FileManager.default.createFile(atPath: out, contents: nil) || FileManager.default.fileExists(atPath: out),
      let handle = FileHandle(forWritingAtPath: out)
    else {
      FileHandle.standardError.write(Data("fathom kube watch: cannot write \(out)\n".utf8))
      throw ExitCode.failure
    }
    handle.seekToEndOfFile()
    let lock = NSLock()
    let source = KubeAPISource(
      config: config, warn: { FileHandle.standardError.write(Data("fathom kube watch: \($0)\n".utf8)) }
    ) { type, object in
      let formatter = ISO8601DateFormatter()
      formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
      let event: [String: Any] = ["time": formatter.string(from: Date()), "type": type, "object": object]
      guard let data = try? JSONSerialization.data(withJSONObject: event, options: [.sortedKeys]) else { return }
      lock.withLock { handle.write(data + Data("\n".utf8)) }
    }
    if let duration {
      Thread.detachNewThread {
        Thread.sleep(forTimeInterval: duration)
        source.stop()
      }
    }
    source.run()
    let counters = source.counters
    FileHandle.standardError.write(
      Data(
        "lists \(counters.lists), watches \(counters.watches), events \(counters.events), bookmarks \(counters.bookmarks), re-lists after 410 \(counters.relistsAfterGone), reconnects \(counters.reconnects)\n"
          .utf8))
  }
}
