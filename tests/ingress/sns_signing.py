"""Signs SNS messages as SNS does, with a certificate made for the test."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from connectors.sns.messages import SnsMessage


class Signer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, fields: dict[str, Any], version: str = "2") -> dict[str, Any]:
        fields = {**fields, "SignatureVersion": version}
        data = SnsMessage(type=fields["Type"], fields=fields).string_to_sign()
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        signature = self.key.sign(data, padding.PKCS1v15(), algorithm)
        return {**fields, "Signature": base64.b64encode(signature).decode()}
