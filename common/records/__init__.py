"""Records several rooms read: the batch ledger and lineage, the deploy record, the outcome-file ledger."""
