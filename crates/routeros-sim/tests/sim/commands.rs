//! Unknown commands, tags, pipelining, /cancel, /quit, a client sending garbage.

use routeros_proto::{encode_sentence, ReplyKind};
use routeros_sim::{GenerateSpec, SimConfig};

use crate::client::{kinds, Client};
use crate::{manual, start};

#[tokio::test]
async fn unknown_command_gives_two_traps_then_done() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    for (path, part) in [
        ("/ip/adress/print", "adress"),
        ("/ip/firewall/connection/frobnicate", "frobnicate"),
        ("/nosuch", "nosuch"),
    ] {
        let r = c.call(&[path, ".tag=u"]).await;
        assert_eq!(
            kinds(&r),
            [ReplyKind::Trap, ReplyKind::Trap, ReplyKind::Done],
            "{path}"
        );
        assert_eq!(r[0].category(), Some(0));
        assert_eq!(
            r[0].message(),
            Some(format!("no such command or directory ({part})"))
        );
        assert_eq!(r[1].category(), None);
        assert_eq!(r[1].message().as_deref(), Some("no such command prefix"));
        assert!(r.iter().all(|x| x.tag() == Some("u")), "{r:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn pipelined_commands_answer_in_order_with_their_tags() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    let mut out = Vec::new();
    for (i, path) in [
        "/system/resource/print",
        "/ip/address/print",
        "/nope",
        "/ip/dns/print",
    ]
    .iter()
    .enumerate()
    {
        encode_sentence([*path, &format!(".tag={i}")], &mut out);
    }
    c.send_raw(&out).await;
    let mut dones = Vec::new();
    while dones.len() < 4 {
        let r = c.read().await;
        let tag = r.tag().expect("every reply is tagged").to_owned();
        if r.kind() == ReplyKind::Done {
            dones.push(tag);
        }
    }
    assert_eq!(dones, ["0", "1", "2", "3"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn quit_is_fatal_and_closes() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    let r = c.call(&["/quit"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Fatal]);
    assert_eq!(
        r[0].message().as_deref(),
        Some("session terminated on request")
    );
    c.expect_eof().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_a_long_print_mid_stream() {
    let sim = start(SimConfig {
        generate: Some(GenerateSpec {
            connections: 200_000,
            ipv6_share: 0.0,
            ..GenerateSpec::default()
        }),
        ..manual()
    })
    .await;
    let mut c = Client::admin(sim.local_addr()).await;
    c.send(&["/ip/firewall/connection/print", ".tag=p"]).await;
    let first = c.read().await;
    assert_eq!((first.kind(), first.tag()), (ReplyKind::Re, Some("p")));
    c.send(&["/cancel", "=tag=p", ".tag=c"]).await;
    let mut rows = 1u64;
    let trap = loop {
        let r = c.read().await;
        assert_eq!(r.tag(), Some("p"), "{r:?}");
        match r.kind() {
            ReplyKind::Re => rows += 1,
            ReplyKind::Trap => break r,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(trap.category(), Some(2));
    assert_eq!(trap.message().as_deref(), Some("interrupted"));
    let done_p = c.read().await;
    assert_eq!((done_p.kind(), done_p.tag()), (ReplyKind::Done, Some("p")));
    let done_c = c.read().await;
    assert_eq!((done_c.kind(), done_c.tag()), (ReplyKind::Done, Some("c")));
    assert!(rows < 200_000, "the print was not stopped ({rows} rows)");
    // The session is still usable.
    assert_eq!(c.rows(&["/system/identity/print"]).await.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_of_a_queued_command_and_cancel_without_tag() {
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    // Both commands and the cancel arrive in one write: the print is cancelled before it runs.
    let mut out = Vec::new();
    encode_sentence(["/ip/address/print", ".tag=a"], &mut out);
    encode_sentence(["/cancel", "=tag=a", ".tag=c"], &mut out);
    c.send_raw(&out).await;
    let r = c.until_done().await;
    // The print either ran before the cancel was seen or was interrupted; both end in !done.
    assert!(r.iter().all(|x| x.tag() == Some("a")));
    let last = c.read().await;
    assert_eq!((last.kind(), last.tag()), (ReplyKind::Done, Some("c")));
    // A cancel with no target is answered with !done.
    let r = c.call(&["/cancel", ".tag=z"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    sim.shutdown().await;
}

#[tokio::test]
async fn garbage_from_a_client_is_fatal_never_a_panic() {
    let sim = start(manual()).await;
    for garbage in [
        &b"\xF8\x01\x02"[..],
        b"\xF0\xFF\xFF\xFF\xFF",
        b"\xE0\x80\x00\x00", // 8 MiB word: above the session's 1 MiB limit
    ] {
        let mut c = Client::admin(sim.local_addr()).await;
        c.send_raw(garbage).await;
        let r = c.read().await;
        assert_eq!(r.kind(), ReplyKind::Fatal, "{garbage:02X?}");
        assert!(r.message().unwrap().starts_with("protocol error"), "{r:?}");
        c.expect_eof().await;
    }
    // The simulator is still fine.
    let mut c = Client::admin(sim.local_addr()).await;
    assert_eq!(c.rows(&["/system/identity/print"]).await.len(), 1);
    sim.shutdown().await;
}
