#!/usr/bin/env bash
# Seeds the decoder fuzzer with real frames: one file per frame of the test captures, its first
# byte selecting the link type as FathomDecodeFuzz expects.
set -euo pipefail
corpus=${1:?corpus directory}
python3 - "$corpus" "$(dirname "$0")/../testdata" "$(dirname "$0")/../../shared/testdata" <<'PY'
import os, struct, sys
corpus, roots = sys.argv[1], sys.argv[2:]
link_types = [0, 1, 9, 101, 105, 108, 113, 127, 228, 229, 239, 276]
written = 0
for root in roots:
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                data = f.read()
            if len(data) < 24:
                continue
            magic = data[:4]
            if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
                endian = "<"
            elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
                endian = ">"
            else:
                continue
            link = struct.unpack(endian + "I", data[20:24])[0] & 0xFFFF
            if link not in link_types:
                continue
            offset, count = 24, 0
            while offset + 16 <= len(data) and count < 20:
                caplen = struct.unpack(endian + "I", data[offset + 8:offset + 12])[0]
                frame = data[offset + 16:offset + 16 + caplen]
                offset += 16 + caplen
                if len(frame) != caplen:
                    break
                with open(os.path.join(corpus, f"seed-{written}"), "wb") as out:
                    out.write(bytes([link_types.index(link)]) + frame)
                written += 1
                count += 1
print(f"{written} seed frames in {corpus}")
PY
