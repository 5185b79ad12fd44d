"""The market simulator (``adl-stream simulate``) and what publishes its records."""
