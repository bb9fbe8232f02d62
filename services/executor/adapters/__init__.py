"""The executor's I/O: the venues (Insiders API, paper), PostgreSQL, and the Redis it reads books from and mirrors
breakers to."""
