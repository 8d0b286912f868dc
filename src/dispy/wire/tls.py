"""TLS contexts for the shared-certificate pattern of the spec.

Both sides are given the same certificate (often self-signed, key in the same file);
each side verifies that the other holds it. Host names are not checked because the
certificate names the cluster, not a host.
"""

from __future__ import annotations

import ssl


def server_context(certfile: str | None, keyfile: str | None = None) -> ssl.SSLContext | None:
    """Context for a listening daemon, or None when TLS is not configured."""
    if not certfile:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile or None)
    ctx.load_verify_locations(certfile)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(certfile: str | None, keyfile: str | None = None) -> ssl.SSLContext | None:
    """Context for a connecting client, or None when TLS is not configured."""
    if not certfile:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.load_cert_chain(certfile, keyfile or None)
    ctx.load_verify_locations(certfile)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
