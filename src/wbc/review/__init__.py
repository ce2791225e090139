"""The lab's review station (issue 14): cases in a real database, each cell's pre-classification checked by a
technologist, every change an append-only audit row, a signed case read-only, exports a lab system reads.

db (tables, the engine: SQLite file with WAL by default, PostgreSQL by URL, Alembic migrations) ->
images (content-addressed files beside the database) -> users (argon2) -> cases (import, reclassify,
undo, open, sign, amend, differential per 100 white cells) -> export (CSV)."""
