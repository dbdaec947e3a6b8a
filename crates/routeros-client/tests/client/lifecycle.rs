//! Closing: `close()` sends `/quit` and joins the tasks; dropping the last handle stops them.

use routeros_client::{Client, Command, Error};
use tokio::sync::oneshot;

use crate::support::{config, serve};

#[tokio::test]
async fn close_sends_quit_fails_pending_and_is_idempotent() {
    let (got_tx, got_rx) = oneshot::channel();
    let server = serve(|mut c| async move {
        c.login().await;
        c.expect("/tool/ping").await;
        got_tx.send(()).unwrap();
        c.expect("/quit").await;
        assert!(
            c.recv().await.is_none(),
            "the client closes its side after /quit"
        );
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.call(Command::new("/tool/ping")).await })
    };
    got_rx.await.unwrap();
    client.close().await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(client.is_closed());
    client.close().await;
    let err = client
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    server.join().await;
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_socket() {
    let server = serve(|mut c| async move {
        c.login().await;
        c.answer_done("/system/identity/print", &[]).await;
        // No /quit, just EOF once the reader and writer tasks are stopped.
        assert!(c.recv().await.is_none());
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let other = client.clone();
    other
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap();
    drop(other);
    drop(client);
    server.join().await;
}

#[tokio::test]
async fn close_after_the_router_hung_up() {
    let server = serve(|mut c| async move {
        c.login().await;
        c.close().await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let err = client
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap_err();
    assert!(err.is_connection_lost(), "{err:?}");
    client.close().await;
    assert!(client.is_closed());
    server.join().await;
}
