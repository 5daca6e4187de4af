"""The server's own certificate for DoT and DoH: two PEM files → a key and its chain, checked.

Both the config check (``smartdns check``, a reload) and the listeners read the files through
``load_certificate_pair``, so a pair the check accepts is exactly a pair the listeners can
serve with.  cryptography is imported only when a certificate is actually read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CertificateProblem(ValueError):
    """A certificate or key file cannot be served; ``key`` names the config key to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key            # "tls_cert_file" or "tls_key_file"
        self.message = message


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """A private key and the certificate chain that goes with it (leaf first)."""

    key: Any                      # a cryptography private key
    chain: tuple[Any, ...]        # cryptography x509.Certificate objects, leaf first


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as e:
        raise CertificateProblem(key, f"cannot be read: {e.strerror}") from None


def load_certificate_pair(certificate_path: str, key_path: str) -> CertificatePair:
    """The pair in these PEM files; raises CertificateProblem when the certificate file holds no
    certificate, the key file no unencrypted private key, or the key is not the leaf's."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    certificate_pem = _read(certificate_path, "tls_cert_file")
    key_pem = _read(key_path, "tls_key_file")
    try:
        chain = tuple(x509.load_pem_x509_certificates(certificate_pem))
    except ValueError:
        raise CertificateProblem("tls_cert_file", "holds no PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateProblem("tls_key_file", "is encrypted (give the key without a passphrase)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateProblem("tls_key_file", "holds no PEM private key") from None

    def public(k: Any) -> bytes:
        return bytes(k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

    if public(private_key.public_key()) != public(chain[0].public_key()):
        raise CertificateProblem("tls_key_file", f"is not the key of the certificate in {certificate_path!r}")
    return CertificatePair(private_key, chain)
