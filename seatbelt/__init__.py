"""seatbelt: a hard, exact, auditable token budget per API key, as a mitmproxy addon."""
