"""The audit ledger: chain rules (`chain`), storage (`store`) and schema (`migrations`)."""
