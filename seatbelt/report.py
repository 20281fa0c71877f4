"""`python -m seatbelt.report` (contract section 6): the spend report of seatbelt/cli/report.py."""

from seatbelt.cli.report import main

if __name__ == "__main__":
    raise SystemExit(main())
