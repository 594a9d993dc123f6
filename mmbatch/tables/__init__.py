"""Output formats behind one interface (`Tables`) and a registry (formats.py): plain Parquet, Delta Lake, Iceberg."""
