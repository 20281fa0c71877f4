"""Metering: the meter of each admitted request and the response scanner that reads usage."""
