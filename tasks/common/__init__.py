"""Names and errors shared by every stage."""
