//! Commands: rows, traps, `!empty`, count-only, tags answered out of order, pipelining.

use std::collections::HashMap;

use routeros_client::{Client, Command, Error};
use tokio::sync::oneshot;

use crate::support::{config, serve, serve_each, still_works};

#[tokio::test]
async fn trap_then_done_is_a_trap_error_and_the_connection_stays_usable() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/ip/firewall/address-list/add").await;
        let tag = cmd.tag().unwrap().to_owned();
        c.send_tagged(
            &tag,
            &[
                "!trap",
                "=category=1",
                "=message=invalid value for argument address",
            ],
        )
        .await;
        c.send_tagged(&tag, &["!done"]).await;
        c.answer_done("/system/identity/print", &[]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let err = client
        .call(Command::new("/ip/firewall/address-list/add").attr("address", "nope"))
        .await
        .unwrap_err();
    let Error::Trap {
        router,
        category,
        message,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(router, "test-router");
    assert_eq!(*category, Some(1));
    assert_eq!(message, "invalid value for argument address");
    assert!(!err.is_connection_lost());
    assert!(err.to_string().contains("argument value failure"));
    assert!(!client.is_closed());
    still_works(&client).await;
    server.join().await;
}

#[tokio::test]
async fn unknown_command_two_traps_then_done() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/ip/adress/print").await;
        let tag = cmd.tag().unwrap().to_owned();
        c.send_tagged(
            &tag,
            &[
                "!trap",
                "=category=0",
                "=message=no such command or directory (adress)",
            ],
        )
        .await;
        c.send_tagged(&tag, &["!trap", "=message=no such command prefix"])
            .await;
        c.send_tagged(&tag, &["!done"]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let err = client
        .call(Command::new("/ip/adress/print"))
        .await
        .unwrap_err();
    let Error::Trap {
        category, message, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*category, Some(0));
    assert!(message.starts_with("no such command or directory (adress)"));
    assert!(message.contains("no such command prefix"));
    assert_eq!(client.in_flight(), 0);
    server.join().await;
}

#[tokio::test]
async fn empty_then_done_and_plain_done_are_both_zero_rows() {
    let server = serve(|mut c| async move {
        c.login().await;
        for _ in 0..2 {
            // RouterOS 7.18+
            let cmd = c.expect("/ip/firewall/filter/print").await;
            let tag = cmd.tag().unwrap().to_owned();
            c.send_tagged(&tag, &["!empty"]).await;
            c.send_tagged(&tag, &["!done"]).await;
            // RouterOS 7.17 and older
            c.answer_done("/ip/firewall/filter/print", &[]).await;
        }
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    for _ in 0..2 {
        let r = client
            .call(Command::new("/ip/firewall/filter/print"))
            .await
            .unwrap();
        assert!(r.rows.is_empty() && r.ret.is_none());
    }
    for _ in 0..2 {
        let mut s = client
            .stream(Command::new("/ip/firewall/filter/print"))
            .await
            .unwrap();
        assert!(s.next().await.is_none());
        assert!(s.is_finished());
        assert!(s.next().await.is_none());
    }
    server.join().await;
}

#[tokio::test]
async fn count_only() {
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c
            .answer_done("/ip/firewall/connection/print", &["=ret=47603"])
            .await;
        assert!(cmd.has("=count-only="), "{cmd:?}");
        assert_eq!(cmd.attr("count-only"), Some(""));
        c.answer_done("/ip/firewall/connection/print", &["=ret=lots"])
            .await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let n = client
        .count(Command::new("/ip/firewall/connection/print"))
        .await
        .unwrap();
    assert_eq!(n, 47603);
    let err = client
        .count(Command::new("/ip/firewall/connection/print"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unexpected { .. }), "{err:?}");
    assert!(!err.is_connection_lost());
    server.join().await;
}

/// Ten calls in flight at once; the server reads all ten before answering any (which only
/// works if the client pipelines), then answers in reverse order with the tag first or last.
#[tokio::test]
async fn tags_answered_out_of_order() {
    const N: usize = 10;
    let server = serve(|mut c| async move {
        c.login().await;
        let mut cmds = Vec::new();
        for _ in 0..N {
            cmds.push(c.expect("/echo").await);
        }
        for (i, cmd) in cmds.iter().rev().enumerate() {
            let tag = cmd.tag().unwrap();
            let n = format!("=n={}", cmd.attr("n").unwrap());
            if i % 2 == 0 {
                c.send(&["!re", &format!(".tag={tag}"), &n]).await;
            } else {
                c.send_tagged(tag, &["!re", &n]).await;
            }
        }
        for cmd in cmds.iter().rev() {
            c.send_tagged(cmd.tag().unwrap(), &["!done"]).await;
        }
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let calls = (0..N).map(|i| {
        let client = client.clone();
        async move {
            let r = client
                .call(Command::new("/echo").attr("n", i.to_string()))
                .await
                .unwrap();
            assert_eq!(r.rows.len(), 1);
            assert_eq!(r.rows[0].get_str("n"), Some(i.to_string().as_str()));
        }
    });
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(client.in_flight(), 0);
    server.join().await;
}

/// Many tasks on a multi-threaded runtime share one client; the server echoes each command
/// as soon as it reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_from_many_tasks() {
    const TASKS: usize = 32;
    const PER_TASK: usize = 20;
    let server = serve(|mut c| async move {
        c.login().await;
        let mut tags = HashMap::new();
        for _ in 0..TASKS * PER_TASK {
            let cmd = c.expect("/echo").await;
            let tag = cmd.tag().unwrap().to_owned();
            assert!(tags.insert(tag.clone(), ()).is_none(), "tag {tag} reused");
            let n = format!("=n={}", cmd.attr("n").unwrap());
            c.send_tagged(&tag, &["!re", &n]).await;
            c.send_tagged(&tag, &["!done"]).await;
        }
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let n = (t * 1000 + i).to_string();
                let r = client
                    .call(Command::new("/echo").attr("n", &n))
                    .await
                    .unwrap();
                assert_eq!(r.rows[0].get_str("n"), Some(n.as_str()));
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    client.close().await;
    server.join().await;
}

#[tokio::test]
async fn call_many_pipelines_and_keeps_order() {
    let server = serve(|mut c| async move {
        c.login().await;
        let mut cmds = Vec::new();
        for _ in 0..5 {
            cmds.push(c.recv().await.unwrap());
        }
        for cmd in cmds.iter().rev() {
            let tag = cmd.tag().unwrap();
            if cmd.attr("address") == Some("bad") {
                c.send_tagged(tag, &["!trap", "=message=failure: already have such entry"])
                    .await;
                c.send_tagged(tag, &["!done"]).await;
            } else {
                let ret = format!("=ret=*{}", cmd.attr("address").unwrap());
                c.send_tagged(tag, &["!done", &ret]).await;
            }
        }
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let cmds = ["1", "2", "bad", "4", "5"]
        .map(|a| Command::new("/ip/firewall/address-list/add").attr("address", a));
    let results = client.call_many(cmds).await;
    assert_eq!(results.len(), 5);
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            assert!(matches!(r, Err(Error::Trap { .. })), "{r:?}");
        } else {
            assert_eq!(
                r.as_ref().unwrap().ret.as_deref(),
                Some(format!("*{}", i + 1).as_str())
            );
        }
    }
    server.join().await;
}

/// A reply the client cannot match to any command it sent (a tag it never issued, or no tag
/// at all, although every command is tagged) drops the connection with a protocol error: the
/// command waiting on it fails, the socket is closed, and a new connection works.
#[tokio::test]
async fn replies_with_a_tag_never_sent_or_none_drop_the_connection() {
    // Words of the foreign reply, and what the error says about it.
    const CASES: [(&[&str], &str); 5] = [
        (
            &["!re", "=name=other", ".tag=999999"],
            "tagged \"999999\", a tag this client never sent",
        ),
        (&["!done", ".tag=not-a-number"], "tagged \"not-a-number\""),
        (&["!done", ".tag=0"], "tagged \"0\""),
        (&["!re", "=name=stray"], "an untagged !re reply"),
        (&["!done"], "an untagged !done reply"),
    ];
    let server = serve_each(CASES.len() + 1, |i, mut c| async move {
        c.login().await;
        if i == CASES.len() {
            c.answer_done("/system/identity/print", &[]).await;
            return;
        }
        c.expect("/system/identity/print").await;
        c.send(CASES[i].0).await;
        assert!(c.recv().await.is_none(), "the client kept the connection");
    })
    .await;
    for (_, detail) in CASES {
        let client = Client::connect(config(server.addr)).await.unwrap();
        let err = client
            .call(Command::new("/system/identity/print"))
            .await
            .unwrap_err();
        let Error::UnmatchedReply { router, detail: d } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(router, "test-router");
        assert!(d.contains(detail), "{d}");
        assert!(err.is_connection_lost());
        assert!(err.to_string().contains("connection was dropped"), "{err}");
        assert!(client.is_closed());
    }
    let client = Client::connect(config(server.addr)).await.unwrap();
    still_works(&client).await;
    server.join().await;
}

/// Replies for a tag that was issued but is no longer awaited (here: a command that already
/// finished) are dropped quietly, not treated as foreign.
#[tokio::test]
async fn late_replies_for_a_finished_tag_are_dropped_quietly() {
    let server = serve(|mut c| async move {
        c.login().await;
        let first = c.answer_done("/system/identity/print", &[]).await;
        let old = first.tag().unwrap().to_owned();
        let next = c.expect("/system/identity/print").await;
        c.send_tagged(&old, &["!re", "=name=late"]).await;
        c.send_tagged(&old, &["!done"]).await;
        let tag = next.tag().unwrap().to_owned();
        c.send_tagged(&tag, &["!re", "=name=mine"]).await;
        c.send_tagged(&tag, &["!done"]).await;
        c.expect("/quit").await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    still_works(&client).await;
    let r = client
        .call(Command::new("/system/identity/print"))
        .await
        .unwrap();
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].get_str("name"), Some("mine"));
    assert!(!client.is_closed());
    client.close().await;
    server.join().await;
}

#[tokio::test]
async fn invalid_command_is_not_sent_and_not_connection_lost() {
    let server = serve(|mut c| async move {
        c.login().await;
        c.answer_done("/system/identity/print", &[]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let err = client
        .call(Command::new("/x").attr("bad name", "1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidCommand { .. }), "{err:?}");
    assert!(!err.is_connection_lost());
    still_works(&client).await;
    server.join().await;
}

/// A caller that gives up on a call (its future is dropped) cancels the command.
#[tokio::test]
async fn dropped_call_future_cancels_its_tag() {
    let (got_tx, got_rx) = oneshot::channel();
    let server = serve(|mut c| async move {
        c.login().await;
        let cmd = c.expect("/tool/ping").await;
        let tag = cmd.tag().unwrap().to_owned();
        got_tx.send(()).unwrap();
        let cancel = c.expect("/cancel").await;
        assert_eq!(cancel.attr("tag"), Some(tag.as_str()));
        c.send_tagged(&tag, &["!trap", "=category=2", "=message=interrupted"])
            .await;
        c.send_tagged(&tag, &["!done"]).await;
        // The /cancel is tagged too (its own tag, which nobody waits for).
        c.send_tagged(cancel.tag().expect("a tagged /cancel"), &["!done"])
            .await;
        c.answer_done("/system/identity/print", &[]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    tokio::select! {
        _ = client.call(Command::new("/tool/ping")) => panic!("the ping never ends"),
        _ = got_rx => {}
    }
    assert_eq!(client.in_flight(), 0);
    still_works(&client).await;
    server.join().await;
}
