"""Records: what seatbelt exports (metrics, the audit log) and the redaction of saved flows."""
