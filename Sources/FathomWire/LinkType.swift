/// LINKTYPE_* values (tcpdump.org/linktypes.html) that the decoder understands.
public enum LinkType {
  public static let null: UInt32 = 0
  public static let ethernet: UInt32 = 1
  public static let ppp: UInt32 = 9
  public static let rawOpenBSD: UInt32 = 12
  public static let rawAlternate: UInt32 = 14
  public static let pppHDLC: UInt32 = 50
  public static let raw: UInt32 = 101
  public static let ciscoHDLC: UInt32 = 104
  public static let ieee80211: UInt32 = 105
  public static let loop: UInt32 = 108
  public static let linuxSLL: UInt32 = 113
  public static let radiotap: UInt32 = 127
  public static let ipv4: UInt32 = 228
  public static let ipv6: UInt32 = 229
  public static let nflog: UInt32 = 239
  public static let linuxSLL2: UInt32 = 276

  /// Link types `PacketDecoder` decodes.
  public static let supported: Set<UInt32> = [
    null, ethernet, ppp, rawOpenBSD, rawAlternate, pppHDLC, raw, ciscoHDLC, ieee80211, loop, linuxSLL,
    radiotap, ipv4, ipv6, nflog, linuxSLL2,
  ]
}
