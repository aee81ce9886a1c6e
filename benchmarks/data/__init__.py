"""Scripts that build the data shipped with anomseg."""
