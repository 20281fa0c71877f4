"""Tests of the operator files under deploy/ (Prometheus rules, Grafana dashboard)."""
