"""One tenant or one anonymous caller must not hurt the service (issue 16).

The public VAPID key is read without a lock.
"""

from __future__ import annotations

from sqlalchemy import event

# --- 7: the public VAPID key is read without a lock ------------------------------------------------------------


async def test_the_vapid_public_key_is_read_without_locking_the_workspace(client, tenant, connection):
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement)

    path = f"/v1/push/web/vapid-public-key?workspace={tenant.id}"
    event.listen(connection.sync_engine, "before_cursor_execute", seen)
    try:
        first = await client.get(path)
        locked_first = [s for s in statements if "FOR UPDATE" in s]
        statements.clear()
        again = await client.get(path)
    finally:
        event.remove(connection.sync_engine, "before_cursor_execute", seen)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json()
    assert locked_first, "generating the key locks the row, so concurrent first uses make one key"
    assert not [s for s in statements if "FOR UPDATE" in s], "a key that exists is read without a lock"
