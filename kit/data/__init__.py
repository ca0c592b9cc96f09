"""Data: sources read, layouts converted to the canonical conversation (tools included), rows checked,
and the prepare stage that splits, renders and tokenizes them into a run."""
