"""Configuration: the mitmproxy options, the policy file and its live reloading."""
