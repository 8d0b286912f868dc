"""Everything that crosses the network: framing, authentication, TLS and discovery."""
