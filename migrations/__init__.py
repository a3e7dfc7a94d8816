"""Alembic migrations, shipped as a package so installed images carry them."""
