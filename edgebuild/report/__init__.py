"""The validation report: report.json (machine-readable, schema_version 1) and a self-contained report.html."""
SCHEMA_VERSION = 1
