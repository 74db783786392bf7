"""Training jobs: records in SQLite, a runner that trains each job in a child process.

Kept free of HTTP and of heavy imports: the child process imports this package too.
"""
