package keystore

// OpenSQLiteBusyTimeout lets tests see lock timeouts without waiting 5 s.
var OpenSQLiteBusyTimeout = openSQLite

// SQLiteResolveQuery is the statement SQLite.Resolve runs.
const SQLiteResolveQuery = sqliteResolveQuery
