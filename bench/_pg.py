"""The benchmarks' PostgreSQL: devtools' throw-away cluster, durable by default (fsync and
synchronous commit on, as production runs), so a commit's cost includes its WAL flush.

    with BenchPostgres() as pg:
        pg.url  # postgres://rf:rf@127.0.0.1:PORT/researchflow
"""

from __future__ import annotations

from devtools.servers import PostgresServer


class BenchPostgres(PostgresServer):
    def __init__(self, *, durable: bool = True, max_connections: int = 100) -> None:
        super().__init__(durable=durable, max_connections=max_connections)
