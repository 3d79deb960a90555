"""Infrastructure: settings, the database and its pool, the embedded cluster, domain errors."""
