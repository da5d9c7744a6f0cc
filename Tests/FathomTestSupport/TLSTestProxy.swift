import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A TLS front for a plain loopback server: socat's OpenSSL listener with a certificate from a
/// test CA (made by openssl in a temporary folder, with a client certificate from the same CA),
/// forwarding to `backendPort`. Servers a user reaches over TLS with a private CA (an API server,
/// a ClickHouse) are tested behind it; `requireClientCertificate` makes it refuse clients
/// without one.
public final class TLSTestProxy: @unchecked Sendable {
  public let folder: URL
  public let port: UInt16
  let socat = Process()

  public struct Failure: Error, CustomStringConvertible {
    public var description: String
  }

  public static var toolsAvailable: Bool {
    FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")
      && FileManager.default.isExecutableFile(atPath: "/usr/bin/socat")
  }

  public init(backendPort: UInt16, requireClientCertificate: Bool) throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "fathom-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try Self.shell(
      """
      set -e
      curve="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      openssl req -x509 $curve -keyout ca.key -out ca.crt -days 1 -subj /CN=fathom-test-ca
      printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext
      openssl req $curve -keyout server.key -out server.csr -subj /CN=fathom-test-server
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile server.ext
      cat server.crt server.key > server.pem
      printf 'extendedKeyUsage=clientAuth\\n' > client.ext
      openssl req $curve -keyout client.key -out client.csr -subj /O=system:masters/CN=fathom
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 1 -extfile client.ext
      """, in: folder)
    port = try Self.freePort()
    socat.executableURL = URL(fileURLWithPath: "/usr/bin/socat")
    socat.arguments = [
      "OPENSSL-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork,cert=\(folder.path)/server.pem,cafile=\(folder.path)/ca.crt,verify=\(requireClientCertificate ? 1 : 0)",
      "TCP:127.0.0.1:\(backendPort)",
    ]
    socat.standardError = FileHandle.nullDevice
    try socat.run()
    try waitUntilListening()
  }

  public func stop() {
    // SIGKILL: socat's listener with `fork` does not always end on SIGTERM.
    kill(socat.processIdentifier, SIGKILL)
    socat.waitUntilExit()
    try? FileManager.default.removeItem(at: folder)
  }

  /// ca.crt, client.crt, client.key, ... from the folder.
  public func pem(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: folder.appendingPathComponent(name)))
  }

  public var url: String { "https://127.0.0.1:\(port)" }

  static func shell(_ script: String, in folder: URL) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script]
    process.currentDirectoryURL = folder
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw Failure(description: "openssl failed") }
  }

  /// A loopback port nothing listens on (bound and released; socat takes it next).
  static func freePort() throws -> UInt16 {
    let (fd, port) = LoopbackSocket.bind(listening: false)
    close(fd)
    return port
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
    throw Failure(description: "socat did not listen on \(port)")
  }
}
