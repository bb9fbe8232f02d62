"""A self-signed RSA certificate for 127.0.0.1 / localhost, made with the standard library alone (tests).

The venv has no X.509 library, so this writes the few DER structures by hand: an RSA-2048 key
(PKCS#1 PEM) and a v3 certificate (sha256WithRSAEncryption, basicConstraints CA, subjectAltName
IP 127.0.0.1 and DNS localhost) that Envoy serves and Python's ssl verifies against itself.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
_SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def _probable_prime(bits: int) -> int:
    while True:
        n = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if any(n % p == 0 for p in _SMALL_PRIMES):
            continue
        d, r = n - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        for _ in range(40):
            x = pow(secrets.randbelow(n - 3) + 2, d, n)
            if x in (1, n - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                break
        else:
            return n


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _len(len(body)) + body


def _int(n: int) -> bytes:
    return _tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        while part > 0x7F:
            part >>= 7
            chunk.append(0x80 | (part & 0x7F))
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _name(common_name: str) -> bytes:
    return _seq(_tlv(0x31, _seq(_oid("2.5.4.3"), _tlv(0x0C, common_name.encode()))))


def _time(moment: datetime) -> bytes:
    return _tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())


def _pem(label: str, der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def write_self_signed(folder: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (mode 600) into ``folder``; return their paths."""
    e = 65537
    while True:
        p, q = _probable_prime(1024), _probable_prime(1024)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    n, d = p * q, pow(e, -1, phi)
    rsa = _seq(_oid("1.2.840.113549.1.1.1"), b"\x05\x00")
    sha256_rsa = _seq(_oid("1.2.840.113549.1.1.11"), b"\x05\x00")
    public_key = _seq(rsa, _tlv(0x03, b"\x00" + _seq(_int(n), _int(e))))
    san = _seq(_tlv(0x87, ipaddress.ip_address("127.0.0.1").packed), _tlv(0x82, b"localhost"))
    extensions = _seq(
        _seq(_oid("2.5.29.19"), _tlv(0x01, b"\xff"), _tlv(0x04, _seq(_tlv(0x01, b"\xff")))),
        _seq(_oid("2.5.29.17"), _tlv(0x04, san)),
    )
    now = datetime.now(UTC)
    tbs = _seq(_tlv(0xA0, _int(2)), _int(secrets.randbits(63)), sha256_rsa, _name(common_name),
               _seq(_time(now - timedelta(hours=1)), _time(now + timedelta(days=1))), _name(common_name),
               public_key, _tlv(0xA3, extensions))
    digest_info = _SHA256_PREFIX + hashlib.sha256(tbs).digest()
    size = (n.bit_length() + 7) // 8
    padded = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
    signature = pow(int.from_bytes(padded, "big"), d, n).to_bytes(size, "big")
    cert = _seq(tbs, sha256_rsa, _tlv(0x03, b"\x00" + signature))
    key = _seq(_int(0), _int(n), _int(e), _int(d), _int(p), _int(q), _int(d % (p - 1)), _int(d % (q - 1)),
               _int(pow(q, -1, p)))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_text(_pem("CERTIFICATE", cert))
    key_path.touch(mode=0o600)
    key_path.write_text(_pem("RSA PRIVATE KEY", key))
    return cert_path, key_path
