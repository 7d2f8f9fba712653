"""The benchmarks' PostgreSQL: devtools' throw-away cluster, durable by default (fsync and
synchronous commit on, as production runs), so a commit's cost includes its WAL flush.

    with BenchPostgres() as pg:
        pg.url  # postgres://rf:rf@127.0.0.1:PORT/researchflow
"""

from __future__ import annotations

from devtools.servers import PostgresServer


class BenchPostgres(PostgresServer):
    def __init__(
        self, *, durable: bool = True, max_connections: int = 100, statements: bool = False
    ) -> None:
        # pg_stat_statements (contrib, in Debian's server package) for a per-statement account;
        # off by default, as its bookkeeping costs a little on every statement.
        options = (
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
            "-c pg_stat_statements.track_planning=on"
            if statements
            else ""
        )
        super().__init__(durable=durable, max_connections=max_connections, options=options)
