"""Alembic runs against DATABASE_URL (or the embedded SQLite default), like the gateway itself."""
from alembic import context

from gateway import config as gateway_config
from gateway.extensions import make_engine
from gateway.store.models import metadata

url = context.config.attributes.get("url") or gateway_config.load().database_url


def run_migrations_offline():
    context.configure(url=url, target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
