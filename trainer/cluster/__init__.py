"""Training on other machines: job records and workers in PostgreSQL, the queue in Procrastinate.

`store` keeps the records every replica reads, `queue` is the Procrastinate app both sides share,
`worker` is `python -m trainer worker`, `child` the process group one job trains in.
"""
