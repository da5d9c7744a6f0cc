import ArgumentParser
import FathomStore
import Foundation

/// TLS settings for an `https://` ClickHouse URL: a private CA, a client certificate, or no
/// verification (ClickHouse's own `--ca-certificate`-style settings, as curl names them).
struct ClickHouseTLSOptions: ParsableArguments {
  @Option(help: "PEM CA certificate(s) that sign the https ClickHouse server's certificate.")
  var clickhouseCACert: String?
  @Option(help: "PEM client certificate for an https ClickHouse that asks for one.") var clickhouseClientCert: String?
  @Option(help: "PEM key of --clickhouse-client-cert.") var clickhouseClientKey: String?
  @Flag(help: "Do not verify the https ClickHouse server's certificate.") var clickhouseInsecureSkipTLSVerify = false

  func validate() throws {
    guard (clickhouseClientCert == nil) == (clickhouseClientKey == nil) else {
      throw ValidationError("--clickhouse-client-cert and --clickhouse-client-key go together")
    }
  }

  /// Reads the files into `target`; a file that cannot be read is a clear error.
  func apply(to target: inout ClickHouseStore.Target) throws {
    func read(_ path: String?, _ option: String) throws -> [UInt8]? {
      guard let path else { return nil }
      guard let data = FileManager.default.contents(atPath: path) else {
        throw ValidationError("\(option): cannot read \(path)")
      }
      return [UInt8](data)
    }
    target.tls.certificateAuthorityPEM = try read(clickhouseCACert, "--clickhouse-ca-cert")
    target.tls.clientCertificatePEM = try read(clickhouseClientCert, "--clickhouse-client-cert")
    target.tls.clientKeyPEM = try read(clickhouseClientKey, "--clickhouse-client-key")
    target.tls.insecureSkipVerify = clickhouseInsecureSkipTLSVerify
  }
}
