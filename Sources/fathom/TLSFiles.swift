import ArgumentParser
import FathomHTTP
import Foundation

extension TLSSettings {
  /// TLS settings from PEM files named on the command line (`options` are the flags' names, for
  /// the errors): a file that cannot be read, or a client certificate without its key, is a
  /// clear error.
  init(
    authority: String?, clientCertificate: String?, clientKey: String?, insecure: Bool,
    options: (authority: String, certificate: String, key: String)
  ) throws {
    func pem(_ path: String?, _ option: String) throws -> [UInt8]? {
      guard let path else { return nil }
      guard let data = FileManager.default.contents(atPath: path) else {
        throw ValidationError("cannot read \(option) \(path)")
      }
      return [UInt8](data)
    }
    guard (clientCertificate == nil) == (clientKey == nil) else {
      throw ValidationError("\(options.certificate) and \(options.key) go together")
    }
    self.init()
    certificateAuthorityPEM = try pem(authority, options.authority)
    clientCertificatePEM = try pem(clientCertificate, options.certificate)
    clientKeyPEM = try pem(clientKey, options.key)
    insecureSkipVerify = insecure
  }
}
