"""Byte-level formats, pure: content-encodings and the strict reading of request bodies."""
