"""Authenticated encryption of one value with one key: SM4-GCM or AES-256-GCM.

A sealed value is text, so it fits any column::

    ih1:<key version>:<algorithm>:<base64url(nonce ‖ ciphertext ‖ tag)>

The header is authenticated with the value (it is part of the associated data), and
so is a *context* string naming where the value lives (``audit:42``), so a ciphertext
copied into another row or another column no longer opens.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from inhouse.config import CipherAlgorithm

FORMAT = "ih1"
_NONCE_BYTES = 12
_TAG_BYTES = 16


class DecryptionError(Exception):
    """A sealed value that does not open: wrong key, wrong context, or changed bytes."""


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    algorithm: CipherAlgorithm

    @property
    def prefix(self) -> str:
        return f"{FORMAT}:{self.version}:{self.algorithm.value}:"


def is_sealed(value: str) -> bool:
    return value.startswith(FORMAT + ":")


def version_prefix(version: int) -> str:
    """What every value sealed with key ``version`` starts with (for SQL ``LIKE``)."""
    return f"{FORMAT}:{version}:"


def read_header(value: str) -> Header:
    parts = value.split(":", 3)
    if len(parts) != 4 or parts[0] != FORMAT:
        raise DecryptionError("not a sealed value")
    try:
        return Header(int(parts[1]), CipherAlgorithm(parts[2]))
    except ValueError:
        raise DecryptionError("unreadable header of a sealed value") from None


def _aad(header: Header, context: str) -> bytes:
    return f"{header.prefix}{context}".encode()


def seal(key: bytes, header: Header, plaintext: bytes, context: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    aad = _aad(header, context)
    if header.algorithm is CipherAlgorithm.AES_256_GCM:
        body = AESGCM(key).encrypt(nonce, plaintext, aad)
    else:
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        body = encryptor.update(plaintext) + encryptor.finalize() + encryptor.tag
    return header.prefix + base64.urlsafe_b64encode(nonce + body).decode()


def open_sealed(key: bytes, value: str, context: str) -> bytes:
    header = read_header(value)
    try:
        raw = base64.urlsafe_b64decode(value[len(header.prefix) :])
    except ValueError:
        raise DecryptionError("the sealed value is not valid base64") from None
    if len(raw) < _NONCE_BYTES + _TAG_BYTES:
        raise DecryptionError("the sealed value is truncated")
    nonce, body = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    aad = _aad(header, context)
    try:
        if header.algorithm is CipherAlgorithm.AES_256_GCM:
            return AESGCM(key).decrypt(nonce, body, aad)
        ciphertext, tag = body[:-_TAG_BYTES], body[-_TAG_BYTES:]
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(ciphertext) + decryptor.finalize()
    except InvalidTag:
        raise DecryptionError("the sealed value does not open with its key") from None


def derive_key(master_key: bytes, algorithm: CipherAlgorithm, purpose: str) -> bytes:
    """A key of ``algorithm``'s size for one purpose, derived from the master key (HKDF-SM3)."""
    return HKDF(
        algorithm=hashes.SM3(),
        length=algorithm.key_bytes,
        salt=None,
        info=f"inhouse {purpose} {algorithm.value}".encode(),
    ).derive(master_key)
