//! The limits on a collected reply (`max_reply_rows`, `max_reply_bytes`): exactly the limit
//! passes, one more fails at once (not at the command timeout) with `ReplyTooLarge`, the
//! connection is dropped so the rest of the reply stops, the memory is freed, and a new
//! connection works.

use routeros_client::{Client, ClientConfig, Command, Error, Family};
use routeros_proto::encode_sentence;

use crate::heap;
use crate::support::{config, serve_each, still_works, Conn};

const LIST_PRINT: &str = "/ip/firewall/address-list/print";

/// The tag of the next command, which must have `path`.
async fn expect_tag(c: &mut Conn, path: &str) -> String {
    c.expect(path).await.tag().unwrap().to_owned()
}

/// Sends `n` address-list rows for `tag` (not the `!done`).
async fn send_rows(c: &mut Conn, tag: &str, n: usize) {
    for i in 0..n {
        c.send_tagged(
            tag,
            &["!re", &format!("=.id=*{i}"), "=address=198.51.100.7"],
        )
        .await;
    }
}

/// The end of a test's first connection: the client must hang up (not `/cancel` and wait),
/// then the second connection answers one identity print.
async fn hung_up_then_works(i: usize, mut c: Conn) {
    if i == 0 {
        let next = c.recv().await;
        assert!(next.is_none(), "the client kept the connection: {next:?}");
    } else {
        c.login().await;
        c.answer_done("/system/identity/print", &[]).await;
    }
}

fn assert_too_large(err: &Error, path: &str, limit: usize, setting: &str) {
    let Error::ReplyTooLarge {
        router,
        what,
        limit: l,
        setting: s,
    } = err
    else {
        panic!("expected ReplyTooLarge, got {err:?}")
    };
    assert_eq!(router, "test-router");
    assert_eq!(what, &format!("the reply to {path}"));
    assert_eq!((*l, *s), (limit, setting));
    assert!(err.is_connection_lost());
    assert!(
        err.to_string().contains(&format!("raise {setting}")),
        "{err}"
    );
}

async fn reconnect_works(cfg: ClientConfig) {
    let client = Client::connect(cfg).await.unwrap();
    still_works(&client).await;
}

/// `max_reply_rows` rows pass; one more, with no `!done` in sight, fails the command as it
/// arrives (before the fix this call waited out the 30 s timeout, holding every row).
#[tokio::test]
async fn rows_at_the_limit_pass_and_one_more_fails_at_once() {
    const LIMIT: usize = 5;
    let server = serve_each(2, |i, mut c| async move {
        if i == 0 {
            c.login().await;
            let tag = expect_tag(&mut c, LIST_PRINT).await;
            send_rows(&mut c, &tag, LIMIT).await;
            c.send_tagged(&tag, &["!done"]).await;
            let tag = expect_tag(&mut c, LIST_PRINT).await;
            send_rows(&mut c, &tag, LIMIT + 1).await;
        }
        hung_up_then_works(i, c).await;
    })
    .await;
    let mut cfg = config(server.addr);
    cfg.max_reply_rows = LIMIT;
    let client = Client::connect(cfg.clone()).await.unwrap();
    let rows = client
        .address_list_print(Family::V4, "allow")
        .await
        .unwrap();
    assert_eq!(rows.len(), LIMIT);
    let err = client
        .address_list_print(Family::V4, "allow")
        .await
        .unwrap_err();
    assert_too_large(&err, LIST_PRINT, LIMIT, "max_reply_rows");
    assert!(client.is_closed());
    assert_eq!(client.in_flight(), 0);
    reconnect_works(cfg).await;
    server.join().await;
}

/// The same at `max_reply_bytes`, set to exactly three rows: a row counts its size on the
/// wire plus 16 bytes per word.
#[tokio::test]
async fn bytes_at_the_limit_pass_and_one_more_row_fails_at_once() {
    const ROW: [&str; 4] = ["!re", "=.id=*1", "=comment=allowlist entry", ".tag=0"];
    let mut wire = Vec::new();
    encode_sentence(ROW, &mut wire);
    let row_bytes = wire.len() + 16 * ROW.len();
    let limit = 3 * row_bytes;
    let server = serve_each(2, |i, mut c| async move {
        if i == 0 {
            c.login().await;
            for rows in [3, 4] {
                let tag = expect_tag(&mut c, "/ip/address/print").await;
                // The row above counts a one-digit tag.
                assert_eq!(tag.len(), 1, "{tag}");
                for _ in 0..rows {
                    c.send_tagged(&tag, &ROW[..3]).await;
                }
                if rows == 3 {
                    c.send_tagged(&tag, &["!done"]).await;
                }
            }
        }
        hung_up_then_works(i, c).await;
    })
    .await;
    let mut cfg = config(server.addr);
    cfg.max_reply_bytes = limit;
    let client = Client::connect(cfg.clone()).await.unwrap();
    let r = client
        .call(Command::new("/ip/address/print"))
        .await
        .unwrap();
    assert_eq!(r.rows.len(), 3);
    let err = client
        .call(Command::new("/ip/address/print"))
        .await
        .unwrap_err();
    assert_too_large(&err, "/ip/address/print", limit, "max_reply_bytes");
    assert!(client.is_closed());
    reconnect_works(cfg).await;
    server.join().await;
}

/// Pipelined: the second command's reply overflows while the caller still waits for the
/// first, so the check must be made as rows arrive, not as the caller collects them. Both
/// fail with the error that ended the connection.
#[tokio::test]
async fn a_pipelined_reply_is_limited_while_its_caller_waits_for_another() {
    const LIMIT: usize = 10;
    let server = serve_each(2, |i, mut c| async move {
        if i == 0 {
            c.login().await;
            c.expect("/system/resource/print").await;
            let tag = expect_tag(&mut c, LIST_PRINT).await;
            send_rows(&mut c, &tag, LIMIT + 1).await;
        }
        hung_up_then_works(i, c).await;
    })
    .await;
    let mut cfg = config(server.addr);
    cfg.max_reply_rows = LIMIT;
    let client = Client::connect(cfg.clone()).await.unwrap();
    let results = client
        .call_many([
            Command::new("/system/resource/print"),
            Command::new(LIST_PRINT),
        ])
        .await;
    for r in &results {
        assert_too_large(r.as_ref().unwrap_err(), LIST_PRINT, LIMIT, "max_reply_rows");
    }
    assert!(client.is_closed());
    reconnect_works(cfg).await;
    server.join().await;
}

/// A router that streams rows without end: the heap grows by about the limit, not by what
/// the router sends, and is back where it was once the command has failed.
#[tokio::test]
async fn an_endless_reply_holds_about_the_limit_and_frees_it() {
    const LIMIT: usize = 2 * 1024 * 1024;
    let server = serve_each(2, |i, mut c| async move {
        if i == 0 {
            c.login().await;
            let tag = expect_tag(&mut c, LIST_PRINT).await;
            let tag_word = format!(".tag={tag}");
            let comment = format!("=comment={}", "x".repeat(100));
            let mut batch = Vec::new();
            let mut sent = 0usize;
            'endless: loop {
                for n in 0..300 {
                    let id = format!("=.id=*{n:X}");
                    encode_sentence(
                        ["!re", &id, "=address=198.51.100.7", &comment, &tag_word],
                        &mut batch,
                    );
                }
                if !c.try_raw(&batch).await {
                    break 'endless;
                }
                sent += batch.len();
                batch.clear();
            }
            // More than the limit went out: the client had to cut the reply off itself.
            assert!(sent > LIMIT, "the server only sent {sent} bytes");
        } else {
            c.login().await;
            c.answer_done("/system/identity/print", &[]).await;
        }
    })
    .await;
    let mut cfg = config(server.addr);
    cfg.max_reply_bytes = LIMIT;
    let client = Client::connect(cfg.clone()).await.unwrap();
    let before = heap::live();
    heap::reset_peak();
    let err = client.call(Command::new(LIST_PRINT)).await.unwrap_err();
    let growth = heap::peak() - before;
    assert_too_large(&err, LIST_PRINT, LIMIT, "max_reply_bytes");
    drop(err);
    assert!(client.is_closed());
    // What the limit allows: LIMIT counted bytes, plus the fixed cost of each of the rows
    // that fit (~300 bytes; 512 allowed), plus 1 MiB for read chunks and the server's own
    // buffers. An unbounded reply grows until the command timeout, by hundreds of MB.
    let mut row = Vec::new();
    let comment = format!("=comment={}", "x".repeat(100));
    encode_sentence(
        [
            "!re",
            "=.id=*0",
            "=address=198.51.100.7",
            &comment,
            ".tag=1",
        ],
        &mut row,
    );
    let rows = LIMIT / (row.len() + 5 * 16) + 1;
    let allowed = (LIMIT + rows * 512 + 1024 * 1024) as isize;
    assert!(
        growth < allowed,
        "the heap grew by {growth} bytes for a {LIMIT}-byte limit ({allowed} allowed)"
    );
    // The server ends (its writes fail once the socket is gone); by then everything the
    // reply held is freed.
    reconnect_works(cfg).await;
    server.join().await;
    let left = heap::live() - before;
    assert!(
        left < 256 * 1024,
        "{left} bytes still held after the failed reply"
    );
}
