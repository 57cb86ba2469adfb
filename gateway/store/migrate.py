"""Alembic, driven from code: `gateway db upgrade`, the Procfile's release step and the tests."""
import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def alembic_config(url):
    cfg = Config(os.path.join(ROOT, "alembic.ini"))
    cfg.set_main_option("script_location", os.path.join(ROOT, "alembic"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url, revision="head"):
    command.upgrade(alembic_config(url), revision)


def is_current(engine, url):
    """Whether the database is at the newest migration."""
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head
