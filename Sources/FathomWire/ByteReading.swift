/// Big-endian loads from unaligned packet bytes. Callers check bounds first.
@inline(__always) func be16(_ base: UnsafeRawPointer, _ offset: Int) -> UInt16 {
  UInt16(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}

@inline(__always) func be32(_ base: UnsafeRawPointer, _ offset: Int) -> UInt32 {
  UInt32(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

@inline(__always) func le16(_ base: UnsafeRawPointer, _ offset: Int) -> UInt16 {
  UInt16(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}

@inline(__always) func byte(_ base: UnsafeRawPointer, _ offset: Int) -> UInt8 {
  base.load(fromByteOffset: offset, as: UInt8.self)
}

@inline(__always) func be64(_ base: UnsafeRawPointer, _ offset: Int) -> UInt64 {
  UInt64(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
}
