//! A connection that dies: EOF mid-sentence, `!fatal`, a hostile length prefix, garbage.
//! Every pending command fails with a clear error and later calls fail fast.

use routeros_client::{Client, Command, Error};
use routeros_proto::ProtoError;

use crate::support::{config, serve};

/// Starts `n` calls of `/echo` and returns their join handles.
fn spawn_calls(client: &Client, n: usize) -> Vec<tokio::task::JoinHandle<Result<(), Error>>> {
    (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call(Command::new("/echo").attr("n", i.to_string()))
                    .await
                    .map(|_| ())
            })
        })
        .collect()
}

async fn assert_closed_for_good(client: &Client) {
    assert!(client.is_closed());
    let err = client
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(err.is_connection_lost());
    let err = client
        .stream(Command::new("/system/identity/print"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}

#[tokio::test]
async fn server_closes_mid_sentence() {
    let server = serve(|mut c| async move {
        c.login().await;
        for _ in 0..3 {
            c.expect("/echo").await;
        }
        // Half of `!re =n=1`, then gone.
        c.raw(b"\x03!re\x04=n").await;
        c.close().await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    for h in spawn_calls(&client, 3) {
        let err = h.await.unwrap().unwrap_err();
        assert!(err.is_connection_lost(), "{err:?}");
        let Error::Io { source, router } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(router, "test-router");
        assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string().contains("in the middle of a reply"),
            "{err}"
        );
    }
    assert_closed_for_good(&client).await;
    client.close().await;
    server.join().await;
}

#[tokio::test]
async fn fatal_fails_every_pending_command() {
    let server = serve(|mut c| async move {
        c.login().await;
        for _ in 0..3 {
            c.expect("/echo").await;
        }
        c.send(&["!fatal", "session terminated on request"]).await;
        c.close().await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    for h in spawn_calls(&client, 3) {
        let err = h.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::Fatal { reason, .. } if reason == "session terminated on request"),
            "{err:?}"
        );
        assert!(err.is_connection_lost());
    }
    assert_closed_for_good(&client).await;
    server.join().await;
}

#[tokio::test]
async fn fatal_also_ends_a_stream() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/log/print").await;
        c.send_tagged(cmd.tag().unwrap(), &["!re", "=message=a"])
            .await;
        c.send(&["!fatal", "out of memory"]).await;
        c.close().await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let mut s = client.stream(Command::new("/log/print")).await.unwrap();
    assert!(s.next().await.unwrap().is_ok());
    let err = s.next().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Fatal { .. }), "{err:?}");
    assert!(s.next().await.is_none());
    assert!(client.is_closed());
    server.join().await;
}

#[tokio::test]
async fn hostile_length_prefix_is_a_protocol_error() {
    let server = serve(|mut c| async move {
        c.login().await;
        c.expect("/echo").await;
        // A 4 GiB word: the client must refuse it, not allocate it.
        c.raw(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]).await;
        // Keep the connection open until the client hangs up.
        assert!(c.recv().await.is_none() || c.recv().await.is_none());
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let err = client.call(Command::new("/echo")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Protocol {
                source: ProtoError::WordTooLong { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_connection_lost());
    assert!(err.to_string().contains("test-router"));
    assert_closed_for_good(&client).await;
    client.close().await;
    server.join().await;
}

#[tokio::test]
async fn unknown_reply_word_is_a_protocol_error() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/echo").await;
        c.send_tagged(cmd.tag().unwrap(), &["!bogus"]).await;
        assert!(c.recv().await.is_none() || c.recv().await.is_none());
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let err = client.call(Command::new("/echo")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Protocol {
                source: ProtoError::UnknownReply(_),
                ..
            }
        ),
        "{err:?}"
    );
    client.close().await;
    server.join().await;
}

#[tokio::test]
async fn connection_refused_is_io() {
    // Bind, learn the port, close: nothing listens there now.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let err = Client::connect(config(addr)).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(err.to_string().contains("test-router"), "{err}");
}
