import Foundation
import Testing

@testable import FathomKube

/// A real cluster's API server speaks TLS with a certificate from the cluster's own CA and
/// usually asks for a client certificate. No API server runs here, so the replay server is put
/// behind socat's OpenSSL listener, which demands a client certificate signed by a test CA;
/// openssl makes the CA and the certificates in a temporary folder.
final class TLSReplayServer: @unchecked Sendable {
  let folder: URL
  let replay: ReplayAPIServer
  let socat = Process()
  let port: UInt16

  static var toolsAvailable: Bool {
    FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")
      && FileManager.default.isExecutableFile(atPath: "/usr/bin/socat") && KubeTestData.available
  }

  init() throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "fathom-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try Self.shell(
      """
      set -e
      curve="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      openssl req -x509 $curve -keyout ca.key -out ca.crt -days 1 -subj /CN=fathom-test-ca
      printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext
      openssl req $curve -keyout server.key -out server.csr -subj /CN=kube-apiserver
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile server.ext
      cat server.crt server.key > server.pem
      printf 'extendedKeyUsage=clientAuth\\n' > client.ext
      openssl req $curve -keyout client.key -out client.csr -subj /O=system:masters/CN=fathom
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 1 -extfile client.ext
      """, in: folder)
    replay = try ReplayAPIServer()
    port = try Self.freePort()
    socat.executableURL = URL(fileURLWithPath: "/usr/bin/socat")
    socat.arguments = [
      "OPENSSL-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork,cert=\(folder.path)/server.pem,cafile=\(folder.path)/ca.crt,verify=1",
      "TCP:127.0.0.1:\(replay.port)",
    ]
    socat.standardError = FileHandle.nullDevice
    try socat.run()
    try waitUntilListening()
  }

  func stop() {
    // SIGKILL: socat's listener with `fork` does not always end on SIGTERM.
    kill(socat.processIdentifier, SIGKILL)
    socat.waitUntilExit()
    replay.stop()
    try? FileManager.default.removeItem(at: folder)
  }

  func pem(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: folder.appendingPathComponent(name))) }

  static func shell(_ script: String, in folder: URL) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script]
    process.currentDirectoryURL = folder
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw KubeDecoder.Failure(message: "openssl failed") }
  }

  /// A loopback port nothing listens on (bound and released; socat takes it next).
  static func freePort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return UInt16(bigEndian: address.sin_port)
  }

  func waitUntilListening() throws {
    for _ in 0..<100 {
      let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
      var address = sockaddr_in()
      address.sin_family = sa_family_t(AF_INET)
      address.sin_addr.s_addr = inet_addr("127.0.0.1")
      address.sin_port = port.bigEndian
      let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
      }
      close(fd)
      if connected == 0 { return }
      usleep(20_000)
    }
    throw KubeDecoder.Failure(message: "socat did not listen on \(port)")
  }

  var url: String { "https://127.0.0.1:\(port)" }
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
