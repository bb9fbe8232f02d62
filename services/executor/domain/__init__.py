"""The executor's pure rules: no I/O, no clock reads (time is passed in)."""
