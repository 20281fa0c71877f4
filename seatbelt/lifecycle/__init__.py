"""What keeps a proxy's ledger state honest between requests, split out of seatbelt/runtime.py:
ledger health (health.py), the background loop (background.py), the budget snapshot behind
the budget gauges and the status command (budgets.py), and the records of reclaimed holds
(orphans.py). The retry queue lives with the ledger (seatbelt/ledger/retry.py)."""
