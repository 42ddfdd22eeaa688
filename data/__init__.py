"""Loan data for the project: fetch the real Kaggle CSV (`data.fetch`) or generate look-alike rows (`data.generate`)."""
