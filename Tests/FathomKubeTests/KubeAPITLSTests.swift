import FathomTestSupport
import Foundation
import Testing

@testable import FathomKube

/// A real cluster's API server speaks TLS with a certificate from the cluster's own CA and
/// usually asks for a client certificate. No API server runs here, so the replay server is put
/// behind a TLS proxy demanding a client certificate signed by a test CA.
final class TLSReplayServer: @unchecked Sendable {
  let replay: ReplayAPIServer
  let proxy: TLSTestProxy

  static var toolsAvailable: Bool { TLSTestProxy.toolsAvailable && KubeTestData.available }

  init() throws {
    replay = try ReplayAPIServer()
    do {
      proxy = try TLSTestProxy(backendPort: replay.port, requireClientCertificate: true)
    } catch {
      replay.stop()
      throw error
    }
  }

  func stop() {
    proxy.stop()
    replay.stop()
  }

  var folder: URL { proxy.folder }
  func pem(_ name: String) throws -> [UInt8] { try proxy.pem(name) }
  var url: String { proxy.url }
}

@Suite(.enabled(if: TLSReplayServer.toolsAvailable), .serialized) struct KubeAPITLSTests {
  /// kubectl's usual file: the CA as a path relative to the kubeconfig, the client certificate
  /// and key inline as base64 — the whole list/watch/410/re-list cycle runs over TLS.
  @Test func kubeconfigWithClusterCAAndClientCertificate() throws {
    let server = try TLSReplayServer()
    defer { server.stop() }
    let kubeconfig = server.folder.appendingPathComponent("kubeconfig").path
    try """
    apiVersion: v1
    kind: Config
    current-context: test
    clusters:
    - name: test
      cluster: {server: "\(server.url)", certificate-authority: ca.crt}
    contexts:
    - name: test
      context: {cluster: test, user: fathom}
    users:
    - name: fathom
      user:
        client-certificate-data: \(Data(try server.pem("client.crt")).base64EncodedString())
        client-key-data: \(Data(try server.pem("client.key")).base64EncodedString())
    """.write(toFile: kubeconfig, atomically: true, encoding: .utf8)
    let config = try KubeAPIConfig.kubeconfig(kubeconfig)
    #expect(config.tls.certificateAuthorityPEM == (try server.pem("ca.crt")))
    let run = SourceRun(config: config) { $0.sawRelist }
    #expect(run.seen.first.map { $0 == ("ADDED", "etcd-m01") } == true, "\(run.seen) \(run.warned)")
    #expect(run.seen.contains { $0 == ("MODIFIED", "etcd-m01") })
    #expect(run.sawRelist)
    #expect(run.warned.isEmpty, "\(run.warned)")
  }

  /// Without the cluster's CA the server is not trusted: no object is reported, and the warning
  /// says why (libcurl's certificate message), instead of a silent empty index.
  @Test func serverFromAnUnknownCAIsRefused() throws {
    let server = try TLSReplayServer()
    defer { server.stop() }
    var config = KubeAPIConfig(server: server.url)
    config.tls.clientCertificatePEM = try server.pem("client.crt")
    config.tls.clientKeyPEM = try server.pem("client.key")
    let run = SourceRun(config: config, until: { !$0.warned.isEmpty }, seconds: 5)
    #expect(run.seen.isEmpty)
    #expect(run.warned.first?.lowercased().contains("certificate") == true, "\(run.warned)")
    #expect(server.replay.lock.withLock { server.replay.requests }.isEmpty)
  }

  /// The server demands a client certificate; without one the handshake fails before any request.
  @Test func missingClientCertificateIsRefused() throws {
    let server = try TLSReplayServer()
    defer { server.stop() }
    var config = KubeAPIConfig(server: server.url)
    config.tls.certificateAuthorityPEM = try server.pem("ca.crt")
    let run = SourceRun(config: config, until: { !$0.warned.isEmpty }, seconds: 5)
    #expect(run.seen.isEmpty)
    #expect(run.warned.first?.contains("GET \(server.url)/api/v1/pods") == true, "\(run.warned)")
    #expect(server.replay.lock.withLock { server.replay.requests }.isEmpty)
  }

  @Test func insecureSkipVerifyTrustsAnyServer() throws {
    let server = try TLSReplayServer()
    defer { server.stop() }
    var config = KubeAPIConfig(server: server.url)
    config.tls.insecureSkipVerify = true
    config.tls.clientCertificatePEM = try server.pem("client.crt")
    config.tls.clientKeyPEM = try server.pem("client.key")
    let run = SourceRun(config: config) { $0.sawRelist }
    #expect(run.sawRelist, "\(run.seen) \(run.warned)")
  }
}

/// Credentials a kubeconfig can hold that Fathom cannot use are named, not ignored.
@Suite struct KubeconfigCredentialTests {
  func config(_ user: String, cluster: String = "{server: \"https://127.0.0.1:6443\"}") throws -> KubeAPIConfig {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent(
      "kubeconfig-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    ).path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try """
    apiVersion: v1
    kind: Config
    current-context: c
    clusters: [{name: k, cluster: \(cluster)}]
    contexts: [{name: c, context: {cluster: k, user: u}}]
    users: [{name: u, user: \(user)}]
    """.write(toFile: path, atomically: true, encoding: .utf8)
    return try KubeAPIConfig.kubeconfig(path)
  }

  func message(_ body: () throws -> KubeAPIConfig) -> String {
    do {
      _ = try body()
      return ""
    } catch { return "\(error)" }
  }

  @Test func unusableCredentialsAreClearErrors() throws {
    #expect(message { try config("{auth-provider: {name: gcp}}") }.contains("not supported"))
    let keyOnly = Data("-----BEGIN PRIVATE KEY-----\n".utf8).base64EncodedString()
    #expect(message { try config("{client-key-data: \(keyOnly)}") }.contains("needs its key"))
    let notPEM = Data("just text".utf8).base64EncodedString()
    #expect(
      message { try config("{token: t}", cluster: "{server: x, certificate-authority-data: \(notPEM)}") }.contains(
        "not PEM"))
    #expect(
      message { try config("{token: t}", cluster: "{server: x, certificate-authority: /nonexistent/ca.crt}") }.contains(
        "cannot read certificate-authority"))
  }

  @Test func tokenFileIsReadForEveryRequest() throws {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("token-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: file) }
    try "first\n".write(toFile: file, atomically: true, encoding: .utf8)
    let config = try config("{tokenFile: \(file)}")
    #expect(try config.currentToken() == "first")
    try "rotated\n".write(toFile: file, atomically: true, encoding: .utf8)
    #expect(try config.currentToken() == "rotated")
  }

  @Test func inClusterReadsTheServiceAccountsCA() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sa-\(getpid())")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    try "-----BEGIN CERTIFICATE-----\n".write(
      to: folder.appendingPathComponent("ca.crt"), atomically: true, encoding: .utf8)
    try "sa-token".write(to: folder.appendingPathComponent("token"), atomically: true, encoding: .utf8)
    let config = try KubeAPIConfig.inCluster(
      serviceAccount: folder.path,
      environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"])
    #expect(config.server == "https://[fd00::1]:443")
    #expect(try config.currentToken() == "sa-token")
    #expect(config.tls.certificateAuthorityPEM == Array("-----BEGIN CERTIFICATE-----\n".utf8))
  }
}
