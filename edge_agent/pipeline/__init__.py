"""The pure data path: ingest → align → windows → features → scoring → ensemble → alarm.

Like h11's protocol core, nothing here opens a socket, a file for writing, or a database, and
nothing reads the wall clock: the daemon (:mod:`edge_agent.daemon`) and ``replay``
(:mod:`edge_agent.tools.replay`) feed it messages and the time, and act on what it returns.
A test (``tests/test_boundaries.py``) fails when a module here imports I/O.
"""
