import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A UDP DNS forwarder that answers late (`fathom lab dns-delay`), for the dns-slow fault: the
/// DNS pod's port 53 is redirected to it, and it relays each query to the real server after the
/// delay. (The kernel here has no netem qdisc to delay packets.)
public enum DNSDelay {
  public static func run(listen: String, upstream: String, delayMillis: Int) throws -> Never {
    guard let listenAddress = socketAddress(listen), let upstreamAddress = socketAddress(upstream) else {
      throw LabError.command("dns-delay: addresses must be IP:PORT")
    }
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    var bindAddress = listenAddress
    let bound = withUnsafePointer(to: &bindAddress) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard fd >= 0, bound == 0 else { throw LabError.command("dns-delay: cannot bind \(listen)") }
    let listener = fd
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      var client = sockaddr_in()
      var length = socklen_t(MemoryLayout<sockaddr_in>.size)
      let count = withUnsafeMutablePointer(to: &client) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          recvfrom(listener, &buffer, buffer.count, 0, $0, &length)
        }
      }
      guard count > 0 else { continue }
      let query = Array(buffer[0..<count])
      let from = client
      Thread.detachNewThread {
        usleep(UInt32(delayMillis) * 1000)
        guard let answer = exchange(query, with: upstreamAddress) else { return }
        var destination = from
        _ = answer.withUnsafeBytes { bytes in
          withUnsafePointer(to: &destination) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
              sendto(listener, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
          }
        }
      }
    }
  }

  static func exchange(_ query: [UInt8], with server: sockaddr_in) -> [UInt8]? {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 3, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var destination = server
    let sent = query.withUnsafeBytes { bytes in
      withUnsafePointer(to: &destination) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
      }
    }
    guard sent == query.count else { return nil }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = recv(fd, &buffer, buffer.count, 0)
    return count > 0 ? Array(buffer[0..<count]) : nil
  }

  static func socketAddress(_ text: String) -> sockaddr_in? {
    let parts = text.split(separator: ":")
    guard parts.count == 2, let port = UInt16(parts[1]) else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(port.bigEndian)
    guard inet_pton(AF_INET, String(parts[0]), &address.sin_addr) == 1 else { return nil }
    return address
  }
}
