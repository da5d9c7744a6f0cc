import Foundation
import Testing

@testable import FathomKube

/// The exec credential plugin of EKS/GKE/AKS kubeconfigs, played by a shell script that logs its
/// runs and what it was given and answers an ExecCredential built from its arguments.
@Suite(.enabled(if: KubeTestData.available)) struct ExecCredentialPluginTests {
  let folder: URL

  init() throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "fathom-exec-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let script = """
      #!/bin/sh
      here=$(dirname "$0")
      echo run >> "$here/runs"
      printf '%s' "$KUBERNETES_EXEC_INFO" > "$here/info"
      printf '%s' "$FATHOM_TEST_ENV" > "$here/env"
      if [ "$1" = fail ]; then echo "no credentials configured" >&2; exit 3; fi
      printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"exec-%s","expirationTimestamp":"%s"}}' "$1" "$2"
      """
    let plugin = folder.appendingPathComponent("plugin.sh").path
    try script.write(toFile: plugin, atomically: true, encoding: .utf8)
    chmod(plugin, 0o755)
  }

  func config(server: String, args: String) throws -> KubeAPIConfig {
    let path = folder.appendingPathComponent("kubeconfig").path
    try """
    apiVersion: v1
    kind: Config
    current-context: c
    clusters: [{name: k, cluster: {server: "\(server)"}}]
    contexts: [{name: c, context: {cluster: k, user: u}}]
    users:
    - name: u
      user:
        exec:
          apiVersion: client.authentication.k8s.io/v1
          command: ./plugin.sh
          args: \(args)
          env: [{name: FATHOM_TEST_ENV, value: hello}]
    """.write(toFile: path, atomically: true, encoding: .utf8)
    return try KubeAPIConfig.kubeconfig(path)
  }

  func runs() -> Int {
    ((try? String(contentsOf: folder.appendingPathComponent("runs"), encoding: .utf8)) ?? "")
      .split(separator: "\n").count
  }

  /// One run serves every request of every resource while the token is valid; the plugin gets
  /// its env and KUBERNETES_EXEC_INFO; its command is relative to the kubeconfig.
  @Test func tokenFromThePluginIsSentAndKept() throws {
    defer { try? FileManager.default.removeItem(at: folder) }
    let server = try ReplayAPIServer()
    defer { server.stop() }
    let config = try config(server: "http://127.0.0.1:\(server.port)", args: "[abc, \"2099-01-01T00:00:00Z\"]")
    let run = SourceRun(config: config) { $0.sawRelist }
    #expect(run.sawRelist, "\(run.warned)")
    let authorizations = server.lock.withLock { server.authorizations }
    #expect(!authorizations.isEmpty && authorizations.allSatisfy { $0 == "Bearer exec-abc" }, "\(authorizations)")
    #expect(runs() == 1)
    let info = try String(contentsOf: folder.appendingPathComponent("info"), encoding: .utf8)
    #expect(info.contains("\"kind\":\"ExecCredential\"") && info.contains("client.authentication.k8s.io/v1"))
    #expect(try String(contentsOf: folder.appendingPathComponent("env"), encoding: .utf8) == "hello")
  }

  @Test func expiredTokenRunsThePluginAgain() throws {
    defer { try? FileManager.default.removeItem(at: folder) }
    let config = try config(server: "https://127.0.0.1:6443", args: "[old, \"2000-01-01T00:00:00Z\"]")
    #expect(try config.currentToken() == "exec-old")
    #expect(try config.currentToken() == "exec-old")
    #expect(runs() == 2)
  }

  /// A refused token (401) is dropped, so the retry asks the plugin for a new one.
  @Test func unauthorizedRunsThePluginAgain() throws {
    defer { try? FileManager.default.removeItem(at: folder) }
    let server = try ReplayAPIServer(refuseWith: 401)
    defer { server.stop() }
    let config = try config(server: "http://127.0.0.1:\(server.port)", args: "[abc, \"2099-01-01T00:00:00Z\"]")
    _ = SourceRun(config: config, until: { _ in runs() >= 2 }, seconds: 5)
    #expect(runs() >= 2)
  }

  @Test func failingPluginIsReportedWithItsMessage() throws {
    defer { try? FileManager.default.removeItem(at: folder) }
    let config = try config(server: "https://127.0.0.1:6443", args: "[fail]")
    #expect {
      _ = try config.currentToken()
    } throws: { "\($0)".contains("exited with 3: no credentials configured") }
  }

  @Test func credentialShapes() throws {
    defer { try? FileManager.default.removeItem(at: folder) }
    let certificate = try ExecCredentialPlugin.parse(
      Data(
        #"{"kind":"ExecCredential","status":{"clientCertificateData":"-----BEGIN CERTIFICATE-----\n","clientKeyData":"-----BEGIN PRIVATE KEY-----\n","expirationTimestamp":"2030-05-01T10:00:00.5Z"}}"#
          .utf8), command: "p")
    #expect(certificate.token == nil && certificate.clientKeyPEM == Array("-----BEGIN PRIVATE KEY-----\n".utf8))
    #expect(certificate.expires != nil)
    #expect(throws: KubeDecoder.Failure.self) { try ExecCredentialPlugin.parse(Data("{}".utf8), command: "p") }
    #expect(throws: KubeDecoder.Failure.self) {
      try ExecCredentialPlugin.parse(Data(#"{"kind":"ExecCredential","status":{}}"#.utf8), command: "p")
    }
  }
}
