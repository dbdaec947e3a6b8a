//! Filter rules: add with place-before, print, move, set, disable, remove.

use routeros_proto::ReplyKind;

use crate::client::{col, kinds, Client};
use crate::{manual, start};

#[tokio::test]
async fn install_move_and_remove_drop_rules() {
    let sim = start(manual()).await;
    let before = sim.filter_rules().len();
    let mut c = Client::admin(sim.local_addr()).await;
    let r = c
        .call(&[
            "/ip/firewall/filter/add",
            "=chain=forward",
            "=action=drop",
            "=dst-address-list=tls_block",
            "=comment=rosguard: drop to tls_block",
            "=place-before=0",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let drop_id = r[0].ret().unwrap().to_owned();
    let r = c
        .call(&[
            "/ip/firewall/filter/add",
            "=chain=input",
            "=action=drop",
            "=src-address-list=tls_block",
            "=comment=second",
        ])
        .await;
    let second = r[0].ret().unwrap().to_owned();

    let rows = c
        .rows(&[
            "/ip/firewall/filter/print",
            "?comment=rosguard: drop to tls_block",
        ])
        .await;
    assert_eq!(col(&rows, ".id"), std::slice::from_ref(&drop_id));
    assert_eq!(col(&rows, "chain"), ["forward"]);
    assert_eq!(col(&rows, "dst-address-list"), ["tls_block"]);
    let rules = sim.filter_rules();
    assert_eq!(rules.len(), before + 2);
    assert_eq!(rules[0][0], (".id".to_owned(), drop_id.clone()));

    // Move the second rule before the first.
    let r = c
        .call(&[
            "/ip/firewall/filter/move",
            &format!("=numbers={second}"),
            &format!("=destination={drop_id}"),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let ids = col(
        &c.rows(&["/ip/firewall/filter/print", "=.proplist=.id"])
            .await,
        ".id",
    );
    assert_eq!(&ids[..2], [second.clone(), drop_id.clone()]);

    let r = c
        .call(&["/ip/firewall/filter/disable", &format!("=numbers={second}")])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    let rows = c
        .rows(&["/ip/firewall/filter/print", "?disabled=true"])
        .await;
    assert_eq!(col(&rows, ".id"), std::slice::from_ref(&second));

    let r = c.call(&["/ip/firewall/filter/add", "=action=drop"]).await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    let r = c
        .call(&[
            "/ip/firewall/filter/add",
            "=chain=forward",
            "=place-before=*FFFF",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);

    let r = c
        .call(&[
            "/ip/firewall/filter/remove",
            &format!("=.id={second},{drop_id}"),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(sim.filter_rules().len(), before);
    let r = c
        .call(&["/ip/firewall/filter/remove", &format!("=.id={second}")])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Trap, ReplyKind::Done]);
    // IPv6 rules are separate.
    let r = c
        .call(&[
            "/ipv6/firewall/filter/add",
            "=chain=forward",
            "=action=drop",
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    assert_eq!(sim.filter_rules().len(), before);
    sim.shutdown().await;
}
