import ArgumentParser
import FathomKube
import Foundation

/// `fathom kube watch`: follows the live API (list then watch per resource) and writes the
/// objects' event log that `fathom analyze --cluster-events` reads.
struct KubeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kube", abstract: "Kubernetes API sources.", subcommands: [KubeWatch.self])
}

struct KubeWatch: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "watch",
    abstract: "List and watch pods, Services, Endpoints, nodes, Ingresses and workloads into an event log.")
  @Option(help: "kubeconfig file (its current context).") var kubeconfig: String?
  @Flag(help: "Use the pod's service account (in-cluster).") var inCluster = false
  @Option(help: "API server URL (instead of a kubeconfig).") var server: String?
  @Option(help: "Bearer token for --server.") var token: String?
  @Option(help: "PEM file of the CAs that sign the server's certificate, for --server.")
  var certificateAuthority: String?
  @Option(help: "PEM client certificate for --server (with --client-key).") var clientCertificate: String?
  @Option(help: "PEM client key for --server.") var clientKey: String?
  @Flag(help: "Do not verify the server's certificate, for --server.") var insecureSkipTlsVerify = false
  @Option(help: "Append events (JSON lines) to this file.") var out: String
  @Option(help: "Stop after this many seconds (default: until interrupted).") var duration: Double?

  func run() throws {
    let config: KubeAPIConfig
    do {
      if let server {
        var explicit = KubeAPIConfig(server: server, token: token)
        explicit.tls.insecureSkipVerify = insecureSkipTlsVerify
        func pem(_ path: String?, _ option: String) throws -> [UInt8]? {
          guard let path else { return nil }
          guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(option) \(path)")
          }
          return [UInt8](data)
        }
        explicit.tls.certificateAuthorityPEM = try pem(certificateAuthority, "--certificate-authority")
        explicit.tls.clientCertificatePEM = try pem(clientCertificate, "--client-certificate")
        explicit.tls.clientKeyPEM = try pem(clientKey, "--client-key")
        if (clientCertificate == nil) != (clientKey == nil) {
          throw ValidationError("--client-certificate and --client-key go together")
        }
        config = explicit
      } else if inCluster {
        config = try KubeAPIConfig.inCluster()
      } else {
        let path =
          kubeconfig ?? ProcessInfo.processInfo.environment["KUBECONFIG"] ?? "\(NSHomeDirectory())/.kube/config"
        config = try KubeAPIConfig.kubeconfig(path)
      }
    } catch {
      FileHandle.standardError.write(Data("fathom kube watch: \(error)\n".utf8))
      throw ExitCode.failure
    }
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
