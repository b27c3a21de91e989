"""Reference learners for comparison tables (BC-All, BC-Safe, ...)."""
