import ArgumentParser
import FathomHTTP
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

  /// Reads the files into `target`; a file that cannot be read is a clear error.
  func apply(to target: inout ClickHouseStore.Target) throws {
    target.tls = try TLSSettings(
      authority: clickhouseCACert, clientCertificate: clickhouseClientCert, clientKey: clickhouseClientKey,
      insecure: clickhouseInsecureSkipTLSVerify,
      options: ("--clickhouse-ca-cert", "--clickhouse-client-cert", "--clickhouse-client-key"))
  }
}
