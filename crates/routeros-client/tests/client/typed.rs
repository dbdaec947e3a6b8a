//! The typed helpers: the words they send, and traps that are outcomes, not errors.

use std::time::Duration;

use routeros_client::{AddOutcome, Client, Error, Family, RemoveOutcome};

use crate::support::{config, serve};

#[tokio::test]
async fn address_list_add_added_and_already_present() {
    let server = serve(|mut c| async move {
        c.login().await;
        let add = c
            .answer_done("/ip/firewall/address-list/add", &["=ret=*1A"])
            .await;
        assert_eq!(add.attr("list"), Some("rosguard"));
        assert_eq!(add.attr("address"), Some("203.0.113.7"));
        assert_eq!(add.attr("timeout"), Some("1d"));
        assert_eq!(add.attr("comment"), Some("tls freeze"));
        let again = c.expect("/ipv6/firewall/address-list/add").await;
        assert_eq!(again.attr("timeout"), None);
        let tag = again.tag().unwrap().to_owned();
        c.send_tagged(
            &tag,
            &["!trap", "=message=failure: already have such entry"],
        )
        .await;
        c.send_tagged(&tag, &["!done"]).await;
        let bad = c.expect("/ip/firewall/address-list/add").await;
        let tag = bad.tag().unwrap().to_owned();
        c.send_tagged(&tag, &["!trap", "=category=1", "=message=invalid value"])
            .await;
        c.send_tagged(&tag, &["!done"]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let out = client
        .address_list_add(
            Family::V4,
            "rosguard",
            "203.0.113.7",
            Some(Duration::from_secs(86_400)),
            "tls freeze",
        )
        .await
        .unwrap();
    assert_eq!(out, AddOutcome::Added { id: "*1A".into() });
    let out = client
        .address_list_add(Family::V6, "rosguard", "2001:db8::7", None, "")
        .await
        .unwrap();
    assert_eq!(out, AddOutcome::AlreadyPresent);
    let err = client
        .address_list_add(Family::V4, "rosguard", "x", None, "")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Trap {
                category: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
    server.join().await;
}

#[tokio::test]
async fn removes_removed_and_no_such_item() {
    let server = serve(|mut c| async move {
        c.login().await;
        let r = c.answer_done("/ip/firewall/address-list/remove", &[]).await;
        assert_eq!(r.attr(".id"), Some("*1A"));
        for path in [
            "/ip/firewall/address-list/remove",
            "/ipv6/firewall/connection/remove",
        ] {
            let cmd = c.expect(path).await;
            let tag = cmd.tag().unwrap().to_owned();
            c.send_tagged(&tag, &["!trap", "=message=no such item (4)"])
                .await;
            c.send_tagged(&tag, &["!done"]).await;
        }
        let r = c.answer_done("/ip/firewall/connection/remove", &[]).await;
        assert_eq!(r.attr(".id"), Some("*5802"));
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    assert_eq!(
        client.address_list_remove(Family::V4, "*1A").await.unwrap(),
        RemoveOutcome::Removed
    );
    assert_eq!(
        client.address_list_remove(Family::V4, "*1B").await.unwrap(),
        RemoveOutcome::NoSuchItem
    );
    assert_eq!(
        client.connection_remove(Family::V6, "*9").await.unwrap(),
        RemoveOutcome::NoSuchItem
    );
    assert_eq!(
        client.connection_remove(Family::V4, "*5802").await.unwrap(),
        RemoveOutcome::Removed
    );
    server.join().await;
}

#[tokio::test]
async fn prints_send_proplist_and_query() {
    let server = serve(|mut c| async move {
        c.login().await;
        let p = c.expect("/ip/firewall/address-list/print").await;
        assert_eq!(
            p.attr(".proplist"),
            Some(".id,list,address,timeout,dynamic,disabled,comment,creation-time")
        );
        assert!(p.has("?=list=rosguard"), "{p:?}");
        let tag = p.tag().unwrap().to_owned();
        c.send_tagged(
            &tag,
            &[
                "!re",
                "=.id=*1",
                "=list=rosguard",
                "=address=198.51.100.1",
                "=timeout=23h59m50s",
            ],
        )
        .await;
        c.send_tagged(&tag, &["!done"]).await;

        let a = c.expect("/ipv6/address/print").await;
        assert_eq!(
            a.attr(".proplist"),
            Some("address,network,interface,disabled")
        );
        let tag = a.tag().unwrap().to_owned();
        c.send_tagged(
            &tag,
            &["!re", "=address=2001:db8::1/64", "=interface=ether1"],
        )
        .await;
        c.send_tagged(&tag, &["!done"]).await;

        let s = c.expect("/system/resource/print").await;
        assert!(s.attr(".proplist").is_some());
        let tag = s.tag().unwrap().to_owned();
        c.send_tagged(&tag, &["!re", "=version=7.24 (stable)", "=uptime=1w2d"])
            .await;
        c.send_tagged(&tag, &["!done"]).await;

        c.answer_done("/system/resource/print", &[]).await;
    })
    .await;
    let client = Client::connect(config(server.addr)).await.unwrap();
    let rows = client
        .address_list_print(Family::V4, "rosguard")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get_str("address"), Some("198.51.100.1"));
    let addrs = client.addresses(Family::V6).await.unwrap();
    assert_eq!(addrs[0].get_str("interface"), Some("ether1"));
    let res = client.system_resource().await.unwrap();
    assert_eq!(res.get_str("version"), Some("7.24 (stable)"));
    let err = client.system_resource().await.unwrap_err();
    assert!(matches!(err, Error::Unexpected { .. }), "{err:?}");
    server.join().await;
}
