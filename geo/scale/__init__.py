"""Beyond one machine: workers behind HAProxy, the lookup index kept fresh by LISTEN/NOTIFY,
and batch work on Dask. The PostgreSQL standby lives in ``geo.core.replica``."""
