"""An outside review of the writer process (red team relay-s31), R2: a write sent whole to the writer and not
answered (the writer died) may be committed, so what it names stays: a raw part's content file is not unlinked,
and the client's keyed retry, answered as a duplicate, finds the part."""

from __future__ import annotations

from relay.app import create_app
from relay.config import RelayConfig


def test_r2_a_writer_dying_after_committing_a_file_part_keeps_the_part_the_retry_is_answered(tmp_path):
    """SQLite with ``--writer`` (documented: "--writer forces it on SQLite"). A file's part of 64 KiB or more is
    written to a content file, then its row is sent to the writer. The writer commits the row and dies before
    answering. Before: the worker's link failed the write with Unavailable (not NotDurable), and Relay.send_raw's
    ``except BaseException`` unlinked the content file the committed row names. Now it is NotDurable, the file
    stays. The client retries under its
    idempotency key and is answered 200, a duplicate of ref 1; before, the part was gone then: a reader was given
    nothing (the row whose file is missing is left out) and its cursor moved past it."""
    import contextlib
    import socket
    import threading

    class _Killed(BaseException):
        pass

    from onetimechat import relaywire
    from relay.storage import open_store
    from relay.writer import StopPipe, WriterLink, link, serve_writer

    url = f"sqlite:///{tmp_path / 'relay.db'}"
    app = create_app(RelayConfig(db=url, min_free_bytes=0))
    relay = app.extensions["otc_relay"]
    worker_control, to_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    relay.store.use_writer(WriterLink(worker_control))
    cleanup = []

    def start_writer(dies_after_a_send: bool):
        store = open_store(url)
        commit_batch = store.commit_batch

        def commit_then_die(take):  # the writer process killed between its commit and its answer
            batch = commit_batch(take)
            if dies_after_a_send and any(getattr(op.fn, "name", "") == "send" and op.error is None for op in batch):
                raise _Killed
            return batch

        store.commit_batch = commit_then_die
        writer_control, to_writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stop = StopPipe()
        def run() -> None:
            with contextlib.suppress(_Killed):  # serve_writer's finally closes its lines, as the kernel would
                serve_writer(store, writer_control, stop.reader)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        link(to_writer, to_worker, 1)
        cleanup.append((stop, thread, store, writer_control, to_writer))
        return thread

    first = start_writer(dies_after_a_send=True)
    client = app.test_client()
    part = bytes(range(256)) * 300  # 76,800 bytes: kept in a content file
    query = "/v1/send-bin?mailbox=files-mailbox&id=part-1"
    try:
        answer = client.post(query, data=part, content_type=relaywire.CONTENT_TYPE)
        assert answer.status_code == 503  # the writer died: the client is told to retry
        first.join(timeout=30)
        start_writer(dies_after_a_send=False)  # the supervisor starts the writer again
        again = client.post(query, data=part, content_type=relaywire.CONTENT_TYPE)
        assert again.status_code == 200, again.get_json()
        assert again.get_json()["ref"] == 1 and again.get_json()["duplicate"] is True  # "stored", says the relay
        read = client.post("/v1/receive", json={"mailboxes": {"files-mailbox": 0}})
        assert read.status_code == 200
        assert [m["ref"] for m in read.get_json()["messages"]] == [1], "the acknowledged part is gone"
    finally:
        for stop, thread, store, *socks in cleanup:
            stop.ring()
            thread.join(timeout=30)
            stop.close()
            for s in socks:
                s.close()
            store.close()
        relay.store.close()
        to_worker.close()
