import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A TCP socket bound to 127.0.0.1 on a port the kernel picks, for the tests' small servers.
public enum LoopbackSocket {
  /// The socket and its port; listening when `listening` (else only bound, to learn a free port).
  public static func bind(listening: Bool) -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
    }
    if listening { listen(fd, 16) }
    _ = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, UInt16(bigEndian: address.sin_port))
  }
}
