"""Output: layout, the write stage, the driver's ledger, progress, lease, state table, the commit, the report."""
