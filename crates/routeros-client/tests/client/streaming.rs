//! Streaming prints: many rows through the bounded channel, backpressure, cancel (explicit,
//! by drop) with the router's late replies dropped quietly. The gap timeout is in `timeouts`.

use std::time::Duration;

use routeros_client::{Client, Command, Error, Family};
use routeros_proto::encode_sentence;
use tokio::sync::oneshot;

use crate::support::{config, serve, serve_with_send_buffer, still_works};

/// 100,000 rows of ~200 bytes (20 MB). The server writes one 64 KiB chunk per turn of the
/// runtime without waiting: a client that keeps reading takes each chunk in before the next,
/// so its socket never fills; a paused consumer's stream buffers about STREAM_CAPACITY rows
/// and then its reader stops reading, so the server's writes soon would block. The server
/// counts the bytes it got out before the first one that would; with its send buffer small,
/// that is what the client (and its receive buffer) took in. Then the consumer drains every
/// row, in order.
#[tokio::test]
async fn many_rows_stream_with_backpressure() {
    const ROWS: usize = 100_000;
    let (blocked_tx, blocked_rx) = oneshot::channel::<usize>();
    let server = serve_with_send_buffer(64 * 1024, |mut c| async move {
        c.login().await;
        let cmd = c.expect("/ip/firewall/connection/print").await;
        let tag_word = format!(".tag={}", cmd.tag().unwrap());
        let padding = format!("=comment={}", "x".repeat(150));
        let mut table = Vec::new();
        for i in 0..ROWS {
            let id = format!("=.id=*{i:X}");
            encode_sentence(
                ["!re", &id, "=protocol=tcp", &padding, &tag_word],
                &mut table,
            );
        }
        encode_sentence(["!done", &tag_word], &mut table);
        let mut written = 0;
        let mut blocked_tx = Some(blocked_tx);
        while written < table.len() {
            let chunk = &table[written..table.len().min(written + 64 * 1024)];
            match c.write_now(chunk).await {
                Some(0) => panic!("the client hung up"),
                Some(n) => written += n,
                None => {
                    if let Some(tx) = blocked_tx.take() {
                        tx.send(written).unwrap();
                    }
                    c.raw(chunk).await; // now wait for the client to read
                    written += chunk.len();
                }
            }
            // Let the client read what is written before the next chunk.
            tokio::task::yield_now().await;
        }
        // Never blocked: the client took in the whole table while its consumer was paused.
        if let Some(tx) = blocked_tx {
            tx.send(written).unwrap();
        }
        c.answer_done("/system/identity/print", &[]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let mut rows = client
        .connections(
            Family::V4,
            Command::new("/ip/firewall/connection/print").proplist(&[".id", "protocol"]),
        )
        .await
        .unwrap();
    let first = rows.next().await.unwrap().unwrap();
    assert_eq!(first.get_str(".id"), Some("*0"));
    // The consumer is paused until the server's writes would block.
    let blocked_at = blocked_rx.await.unwrap();
    let total = ROWS * 200;
    assert!(
        blocked_at < total / 4,
        "the server wrote {blocked_at} of ~{total} bytes to a paused consumer: the client \
         buffers without bound"
    );
    let mut n = 1;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        assert_eq!(row.get_str(".id"), Some(format!("*{n:X}").as_str()));
        n += 1;
    }
    assert_eq!(n, ROWS);
    still_works(&client).await;
    server.join().await;
}

/// `/cancel =tag=X`, then the router's 2-3 late sentences for X (interrupted trap, `!empty`,
/// `!done`) and the untagged `!done` of the cancel itself: all dropped, connection fine.
#[tokio::test]
async fn cancel_then_late_replies_are_dropped() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/ip/firewall/connection/print").await;
        assert!(cmd.has("=follow="));
        let tag = cmd.tag().unwrap().to_owned();
        c.send_tagged(&tag, &["!re", "=.id=*1"]).await;
        c.send_tagged(&tag, &["!re", "=.id=*2"]).await;
        let cancel = c.expect("/cancel").await;
        assert_eq!(cancel.attr("tag"), Some(tag.as_str()));
        c.send_tagged(&tag, &["!re", "=.id=*3"]).await;
        c.send_tagged(&tag, &["!trap", "=category=2", "=message=interrupted"])
            .await;
        c.send_tagged(&tag, &["!empty"]).await;
        c.send_tagged(&tag, &["!done"]).await;
        // The cancel's own reply, under its own tag.
        c.send_tagged(cancel.tag().expect("a tagged /cancel"), &["!done"])
            .await;
        let next = c.expect("/system/identity/print").await;
        let next_tag = next.tag().unwrap().to_owned();
        c.send_tagged(&next_tag, &["!re", "=name=still-here"]).await;
        c.send_tagged(&next_tag, &["!done"]).await;
        c.expect("/quit").await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let mut s = client
        .stream(Command::new("/ip/firewall/connection/print").flag("follow"))
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap().unwrap().get_str(".id"), Some("*1"));
    s.cancel().await;
    assert_eq!(client.in_flight(), 0);
    let r = client
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap();
    assert_eq!(r.rows[0].get_str("name"), Some("still-here"));
    assert!(!client.is_closed());
    client.close().await;
    server.join().await;
}

/// The reader hands rows over in batches, but never holds one back waiting for more: a lone
/// row reaches the consumer while the router is silent. Rows of a stream and replies of
/// another command interleaved on the wire each reach their own waiter, in order.
#[tokio::test]
async fn rows_are_handed_over_as_they_arrive() {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/ip/firewall/connection/print").await;
        let tag = cmd.tag().unwrap().to_owned();
        c.send_tagged(&tag, &["!re", "=.id=*1"]).await;
        // Silent until the client has row 1.
        go_rx.await.unwrap();
        let other = c.expect("/system/identity/print").await;
        let other_tag = other.tag().unwrap().to_owned();
        let mut bytes = Vec::new();
        for (t, words) in [
            (&tag, &["!re", "=.id=*2"][..]),
            (&other_tag, &["!re", "=name=r1"][..]),
            (&tag, &["!re", "=.id=*3"][..]),
            (&other_tag, &["!done"][..]),
            (&tag, &["!re", "=.id=*4"][..]),
            (&tag, &["!done"][..]),
        ] {
            let tag_word = format!(".tag={t}");
            let mut all: Vec<&str> = words.to_vec();
            all.push(&tag_word);
            encode_sentence(all, &mut bytes);
        }
        // In one write: the client reads them all at once.
        c.raw(&bytes).await;
        c.expect("/quit").await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let mut s = client
        .stream(Command::new("/ip/firewall/connection/print"))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("a lone row must not wait for more rows")
        .unwrap()
        .unwrap();
    assert_eq!(first.get_str(".id"), Some("*1"));
    go_tx.send(()).unwrap();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(Command::new("/system/identity/print")).await }
    });
    let mut ids = Vec::new();
    while let Some(row) = s.next().await {
        ids.push(row.unwrap().get_str(".id").unwrap().to_owned());
    }
    assert_eq!(ids, ["*2", "*3", "*4"]);
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].get_str("name"), Some("r1"));
    assert_eq!(client.in_flight(), 0);
    client.close().await;
    server.join().await;
}

#[tokio::test]
async fn dropping_a_stream_cancels_it() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/log/print").await;
        let tag = cmd.tag().unwrap().to_owned();
        c.send_tagged(&tag, &["!re", "=message=a"]).await;
        let cancel = c.expect("/cancel").await;
        assert_eq!(cancel.attr("tag"), Some(tag.as_str()));
        c.send_tagged(&tag, &["!trap", "=category=2", "=message=interrupted"])
            .await;
        c.send_tagged(&tag, &["!done"]).await;
        c.answer_done("/system/identity/print", &[]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let mut s = client
        .stream(Command::new("/log/print").flag("follow"))
        .await
        .unwrap();
    s.next().await.unwrap().unwrap();
    drop(s);
    assert_eq!(client.in_flight(), 0);
    still_works(&client).await;
    server.join().await;
}

#[tokio::test]
async fn trap_in_a_stream_ends_it_with_an_error() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/ipv6/firewall/connection/print").await;
        let tag = cmd.tag().unwrap().to_owned();
        c.send_tagged(&tag, &["!re", "=.id=*1"]).await;
        c.send_tagged(&tag, &["!trap", "=category=4", "=message=failure"])
            .await;
        c.send_tagged(&tag, &["!done"]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let mut s = client
        .connections(
            Family::V6,
            Command::new(&Family::V6.path("firewall/connection/print")),
        )
        .await
        .unwrap();
    assert!(s.next().await.unwrap().is_ok());
    let err = s.next().await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Trap {
                category: Some(4),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.next().await.is_none());
    server.join().await;
}

#[tokio::test]
async fn connections_checks_the_path() {
    let server = serve(|mut c| async move {
        c.login().await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let err = client
        .connections(Family::V6, Command::new("/ip/firewall/connection/print"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidCommand { .. }), "{err:?}");
    server.join().await;
}
