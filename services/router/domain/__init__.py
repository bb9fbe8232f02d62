"""Pure routing logic: no I/O, no clock reads (time is passed in)."""
