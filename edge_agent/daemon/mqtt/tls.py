"""The TLS context for the broker connection, from the ``mqtt.tls`` settings."""

from __future__ import annotations

import ssl

from edge_agent.config import TlsSettings


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Verify the broker against ``ca_file`` (system CAs when unset); optional client cert.

    Raises ``OSError``/``ssl.SSLError`` for unreadable or unusable files: the link reports
    those as ``cause="config"`` and retries, so a fixed file is picked up without a restart.
    """
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None and tls.key_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure:
        ctx.check_hostname = False  # chain still verified; only the host name is not
    return ctx
