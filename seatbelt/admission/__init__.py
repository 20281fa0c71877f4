"""Admission: the request hook's work, from route to reservation or refusal (contract §4.1-4.3)."""
