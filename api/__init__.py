"""The thin FastAPI layer over geo/: routers, schemas, auth and error mapping."""
