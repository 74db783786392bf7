"""`python -m client` (or the `mnist` command): the service's API from a terminal or a script.

Talks to a running service over HTTP only (httpx), so it works against any deployment; it imports
nothing of the service, the trainer or NumPy and starts in a blink. Exit codes are meant for
scripts: see `client.errors`.
"""
