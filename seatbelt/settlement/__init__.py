"""Settlement: finishing a request exactly once (settle or release), then its records."""
