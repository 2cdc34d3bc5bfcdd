"""The only place with SQL: tables, queries, the pool, the cache, the embedded server."""
