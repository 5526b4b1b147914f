"""Raw HTTP/2 bytes for tests that must send what a client library would
not (floods, garbage, half-finished requests) and for fuzz seeds: frames and
an HPACK block of literal fields (no indexing, no Huffman)."""

import struct

PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'


def frame(ftype, flags, stream, payload=b''):
    return struct.pack('>I', len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack('>I', stream) + payload


def hpack(headers):
    """Literal header fields without indexing, new names; names shorter
    than 127 bytes, values of any length (7-bit prefix integer)."""
    out = b''
    for name, value in headers:
        out += b'\x00' + bytes([len(name)])
        out += name.encode()
        v = value.encode()
        if len(v) < 127:
            out += bytes([len(v)])
        else:
            out += b'\x7f'
            n = len(v) - 127
            while n >= 128:
                out += bytes([n & 0x7f | 0x80])
                n >>= 7
            out += bytes([n])
        out += v
    return out
