"""The driver's protocol of a night, behind one `Night` (night.py): lease, ledger, progress, commit, state."""
