"""TLS both ways: listeners from cert/key files, and verified outgoing connections.

Listeners (RTMPS, HTTPS) are Twisted ``ssl:`` endpoints.  Before one is built
the certificate and key files are read and checked here, so a missing or
unreadable file, a file that is not PEM, or a key that does not belong to the
certificate is one :class:`~lal_twisted.config.ConfigError` at startup naming
the key and the file, not a traceback when the first client connects.

Outgoing ``rtmps://`` and ``https://`` connections (relays, the tools) use
:func:`client_tls`: Twisted's ``optionsForClientTLS``, which checks the peer's
certificate chain against a trust root and its name against the host name
with ``service_identity``.  The trust root is the system store, or, when
``tls_client.ca_file`` is set, the certificates of that PEM file *instead of*
the system store (a private CA for a private deployment).  With
``tls_client.verify`` false nothing is checked (a test or a trusted LAN only;
the relay logs a warning each time it connects that way).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl

from lal_twisted.errors import ConfigError

__all__ = ["check_cert_and_key", "client_tls", "ssl_endpoint", "verification_error"]


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"{key}: file {path!r} not found") from None
    except OSError as e:
        raise ConfigError(f"{key}: file {path!r} cannot be read: {e.strerror}") from None


def check_cert_and_key(cert_file: str, key_file: str, cert_key: str, key_key: str) -> None:
    """Raise ConfigError unless ``cert_file`` holds a PEM certificate and
    ``key_file`` the PEM private key that matches it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_pem, key_pem = _read(cert_file, cert_key), _read(key_file, key_key)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError(f"{cert_key}: {cert_file!r} is not a PEM certificate") from None
    try:
        pkey = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{key_key}: {key_file!r} is not a PEM private key "
                          "(an encrypted key is not supported)") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != pkey.public_key().public_bytes(*spki):
        raise ConfigError(f"{key_key}: the key in {key_file!r} does not match the certificate "
                          f"in {cert_file!r} ({cert_key})")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def ssl_endpoint(tcp_description: str, cert_file: str, key_file: str,
                 cert_key: str, key_key: str) -> str:
    """The ``ssl:`` server endpoint description for a checked cert/key pair,
    from the ``tcp:``/``tcp6:`` description :func:`parse_listen_addr` made.
    A description the user wrote as ``ssl:...`` is returned as is."""
    if not tcp_description or tcp_description.startswith("ssl:"):
        return tcp_description  # empty: refused by the service if the listener is on
    kind, _, rest = tcp_description.partition(":")
    if kind not in ("tcp", "tcp6"):
        raise ConfigError(f"{cert_key}: a TLS listener needs a TCP address, "
                          f"got {tcp_description!r}")
    check_cert_and_key(cert_file, key_file, cert_key, key_key)
    return (f"ssl:{rest}:privateKey={_escape(key_file)}:certKey={_escape(cert_file)}")


def client_tls(host: str, ca_file: str = "", verify: bool = True) -> Any:
    """Client TLS options for ``host``: chain and name verified against the
    system store, or against ``ca_file`` alone when it is set."""
    if not verify:
        return ssl.CertificateOptions(verify=False)  # type: ignore[return-value]
    trust: Any
    if ca_file:
        trust = ssl.trustRootFromCertificates(_load_ca(ca_file))
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(host, trustRoot=trust)


def _load_ca(ca_file: str) -> list[ssl.Certificate]:
    """Every certificate of a PEM bundle."""
    data = _read(ca_file, "tls_client.ca_file")
    marker = b"-----END CERTIFICATE-----"
    certs = []
    for block in data.split(marker)[:-1]:
        start = block.find(b"-----BEGIN CERTIFICATE-----")
        if start < 0:
            continue
        try:
            certs.append(ssl.Certificate.loadPEM(block[start:] + marker + b"\n"))
        except Exception:
            raise ConfigError(f"tls_client.ca_file: {ca_file!r} holds a certificate that "
                              "cannot be read") from None
    if not certs:
        raise ConfigError(f"tls_client.ca_file: {ca_file!r} holds no PEM certificate")
    return certs


def verification_error(message: str) -> str | None:
    """A readable cause when a connection failure message says the peer's
    certificate or name was not accepted; None for other failures."""
    text = message.lower()
    if "mismatch" in text or "verificationerror" in text:
        return f"TLS certificate name does not match the host ({message})"
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        return f"TLS certificate not trusted ({message})"
    if "ssl" in text and ("alert" in text or "handshake" in text or "wrong version" in text):
        return f"TLS handshake failed ({message})"
    return None
