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


def explain_handshake_failure(exc: BaseException, tls_on: bool) -> str:
    """Why a connection to a node failed, when TLS on one side only is the likely cause;
    "" when nothing points to TLS (the caller keeps its own message).

    ``tls_on``: whether this side used TLS (was given a certfile). A TLS node drops a
    plain peer without a word (the peer reads 0 bytes); a plain node answers a TLS
    ClientHello with nothing a TLS peer can read, or drops it.
    """
    detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
    if isinstance(exc, ConnectionRefusedError):
        return ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the node's TLS certificate is not the one in certfile ({detail}); give"
                " the same certificate as the node's --certfile")
    if tls_on:
        if isinstance(exc, ssl.SSLError) or isinstance(exc, (ConnectionResetError,
                                                             BrokenPipeError, EOFError)) \
                or getattr(exc, "received", None) == 0:
            return (f"the node does not use TLS (TLS handshake failed: {detail}); start"
                    " it with --certfile/--keyfile, or give no certfile/keyfile here")
        if isinstance(exc, TimeoutError):
            return ("the node gave no TLS answer in time: it may not use TLS; start it"
                    " with --certfile/--keyfile, or give no certfile/keyfile here")
        return ""
    silent = getattr(exc, "received", None) == 0  # connection.ConnectionClosed
    alert = "speaks TLS" in str(exc)  # codec.FrameError on a TLS record
    if alert or silent or isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return (f"the node uses TLS; give certfile/keyfile (the node closed the connection"
                f" at the first message: {detail})")
    return ""
