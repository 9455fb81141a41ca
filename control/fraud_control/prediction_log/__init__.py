"""The prediction log: the sink KServe's payload logger posts to (`sink`), the store it writes
(`store`: SQLite | PostgreSQL), and the label-free feedback signals read from it (`feedback`,
served as Prometheus gauges by `feedback_metrics`)."""
