"""SNS message signatures: SignatureVersion 1 (RSA with SHA1) and 2 (RSA with SHA256) over
the message's string to sign, checked with the certificate at ``SigningCertURL``.

The certificate is fetched only over HTTPS from a host matching the configured pattern
(AWS's ``sns.REGION.amazonaws.com`` by default), so that a forged message cannot point at a
certificate of its own; or it is read from a configured file. Fetched certificates are kept
by URL (SNS signs with few certificates).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from connectors.sns.messages import SnsMessage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_CERT_HOST = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
MAX_CACHED = 64


class SignatureError(ValueError):
    """A message whose signature does not verify; says why."""


Fetch = Callable[[str], Awaitable[bytes]]
"""Gets a certificate (PEM bytes) from an HTTPS URL."""


class SignatureVerifier:
    """Verifies messages; ``cert_file`` (PEM) instead of fetching when given."""

    def __init__(
        self,
        *,
        fetch: Fetch,
        cert_host: str = DEFAULT_CERT_HOST,
        cert_pem: bytes | None = None,
    ) -> None:
        self._fetch = fetch
        self._host = re.compile(cert_host)
        self._fixed = _public_key(cert_pem, "the configured certificate") if cert_pem else None
        self._cache: dict[str, rsa.RSAPublicKey] = {}

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not self._host.search(parts.hostname or ""):
            raise SignatureError(
                f"SigningCertURL {url!r} is not https on a host matching {self._host.pattern!r}"
            )

    async def verify(self, message: SnsMessage) -> None:
        """Return if the message's signature verifies; raise :class:`SignatureError`."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        version = message.fields.get("SignatureVersion")
        if version == "1":
            algorithm: hashes.HashAlgorithm = hashes.SHA1()  # SNS's version 1 is SHA1
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise SignatureError(f"SignatureVersion {version!r} is neither 1 nor 2")
        try:
            signature = base64.b64decode(str(message.fields.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("Signature is not base64") from None
        key = self._fixed or await self._key(str(message.fields.get("SigningCertURL", "")))
        try:
            key.verify(signature, message.string_to_sign(), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SignatureError("the signature does not match the message") from None

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._cache.get(url)
        if key is not None:
            return key
        self.check_url(url)
        try:
            pem = await self._fetch(url)
        except OSError as e:
            raise SignatureError(f"cannot fetch the certificate {url}: {e}") from e
        key = _public_key(pem, url)
        if len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[url] = key
        return key


def _public_key(pem: bytes, where: str) -> rsa.RSAPublicKey:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError as e:
        raise SignatureError(f"{where} is no PEM certificate: {e}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError(f"{where} holds no RSA key")
    return key


__all__ = ["DEFAULT_CERT_HOST", "Fetch", "SignatureError", "SignatureVerifier"]
