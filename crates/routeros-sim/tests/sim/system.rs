//! The router's own menus: `/user/active` (sessions as the router sees them, NAT included),
//! `/ip/route` and `/ipv6/route` default routes, `/ip/dns` servers, from `SimConfig` and from a
//! scenario's `[router]` table; uptime across a reboot.

use std::time::{Duration, Instant};

use routeros_proto::ReplyKind;
use routeros_sim::{Family, Scenario, SimConfig, SimTls};

use crate::client::{col, kinds, names, Client, WAIT};
use crate::{manual, start};

const ACTIVE: &str = "/user/active/print";

#[tokio::test]
async fn user_active_lists_each_logged_in_session() {
    let sim = start(SimConfig {
        users: vec![("admin".into(), String::new()), ("ops".into(), "pw".into())],
        ..manual()
    })
    .await;
    let mut a = Client::admin(sim.local_addr()).await;
    sim.advance(Duration::from_secs(5));
    let mut b = Client::connect(sim.local_addr()).await;
    b.login("ops", "pw").await;
    // Not logged in yet: not listed.
    let _c = Client::connect(sim.local_addr()).await;
    let rows = a.rows(&[ACTIVE]).await;
    assert_eq!(col(&rows, "name"), ["admin", "ops"]);
    assert_eq!(col(&rows, "address"), ["127.0.0.1", "127.0.0.1"]);
    assert_eq!(col(&rows, "via"), ["api", "api"]);
    assert_eq!(col(&rows, "radius"), ["false", "false"]);
    assert_eq!(
        col(&rows, "when"),
        ["2025-01-01 00:00:00", "2025-01-01 00:00:05"]
    );
    let ids = col(&rows, ".id");
    assert!(
        ids.iter().all(|i| i.starts_with('*')) && ids[0] != ids[1],
        "{ids:?}"
    );

    // .proplist and queries work as on any print.
    let rows = a.rows(&[ACTIVE, "=.proplist=name,via", "?name=ops"]).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(names(&rows[0]), ["name", "via"]);
    let r = a.call(&[ACTIVE, "=count-only=", "?via=api-ssl"]).await;
    assert_eq!((kinds(&r), r[0].ret()), (vec![ReplyKind::Done], Some("0")));

    // A session that ends leaves the list.
    b.call(&["/quit"]).await;
    drop(b);
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = a.rows(&[ACTIVE, "=.proplist=name"]).await;
        if col(&rows, "name") == ["admin"] {
            break;
        }
        assert!(Instant::now() < deadline, "ops is still listed: {rows:?}");
        tokio::task::yield_now().await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn user_active_shows_the_nat_address_and_api_ssl() {
    let sim = start(SimConfig {
        session_address: Some("203.0.113.77".parse().unwrap()),
        ..manual()
    })
    .await;
    let mut c = Client::admin(sim.local_addr()).await;
    let rows = c.rows(&[ACTIVE, "?name=admin"]).await;
    assert_eq!(col(&rows, "address"), ["203.0.113.77"]);
    sim.shutdown().await;

    // The same from a scenario's [router] table; SimConfig wins over it.
    let scenario =
        Scenario::from_toml("[router]\nsession_address = \"192.0.2.9\"\n", "nat.toml").unwrap();
    let sim = start(SimConfig {
        scenario: Some(scenario.clone()),
        ..manual()
    })
    .await;
    let mut c = Client::admin(sim.local_addr()).await;
    assert_eq!(col(&c.rows(&[ACTIVE]).await, "address"), ["192.0.2.9"]);
    sim.shutdown().await;

    let sim = start(SimConfig {
        tls: Some(SimTls::GeneratedSelfSigned),
        scenario: Some(scenario),
        session_address: Some("198.18.0.1".parse().unwrap()),
        ..manual()
    })
    .await;
    let mut c = crate::sessions::tls_client(&sim).await;
    c.login("admin", "").await;
    let rows = c.rows(&[ACTIVE]).await;
    assert_eq!(col(&rows, "via"), ["api-ssl"]);
    assert_eq!(col(&rows, "address"), ["198.18.0.1"]);
    sim.shutdown().await;
}

fn default_route(rows: &[routeros_proto::Reply], dst: &str) -> Vec<String> {
    let hit: Vec<_> = rows
        .iter()
        .filter(|r| r.get_str("dst-address") == Some(dst))
        .cloned()
        .collect();
    col(&hit, "gateway")
}

#[tokio::test]
async fn routes_and_dns_are_configurable() {
    // Defaults.
    let sim = start(manual()).await;
    let mut c = Client::admin(sim.local_addr()).await;
    let v4 = c.rows(&["/ip/route/print"]).await;
    assert_eq!(default_route(&v4, "0.0.0.0/0"), ["198.51.100.1"]);
    assert_eq!(default_route(&v4, "192.168.88.0/24"), ["bridge"]);
    let v6 = c.rows(&["/ipv6/route/print"]).await;
    assert_eq!(default_route(&v6, "::/0"), ["fe80::1%ether1"]);
    assert_eq!(default_route(&v6, "fd00:88::/64"), ["bridge"]);
    assert!(v6.iter().all(|r| r.get_str(".id").is_some()));
    let rows = c
        .rows(&[
            "/ipv6/route/print",
            "=.proplist=gateway",
            "?dst-address=::/0",
        ])
        .await;
    assert_eq!(names(&rows[0]), ["gateway"]);
    let dns = c.rows(&["/ip/dns/print"]).await;
    assert_eq!(col(&dns, "servers"), ["1.1.1.1,9.9.9.9"]);
    assert_eq!(col(&dns, "dynamic-servers"), [""]);
    sim.shutdown().await;

    // From a scenario, with SimConfig overriding part of it.
    let scenario = Scenario::from_toml(
        "[router]\nipv4_gateway = \"198.51.100.254\"\nipv6_gateway = \"2001:db8::1\"\n\
         dns_servers = [\"9.9.9.9\", \"2620:fe::fe\"]\ndynamic_dns_servers = [\"192.168.1.1\"]\n",
        "router.toml",
    )
    .unwrap();
    let sim = start(SimConfig {
        scenario: Some(scenario),
        dynamic_dns_servers: Some(vec!["10.0.0.53".parse().unwrap()]),
        ..manual()
    })
    .await;
    let mut c = Client::admin(sim.local_addr()).await;
    let v4 = c.rows(&["/ip/route/print"]).await;
    assert_eq!(default_route(&v4, "0.0.0.0/0"), ["198.51.100.254"]);
    let v6 = c.rows(&["/ipv6/route/print"]).await;
    assert_eq!(default_route(&v6, "::/0"), ["2001:db8::1"]);
    let dns = c.rows(&["/ip/dns/print"]).await;
    assert_eq!(col(&dns, "servers"), ["9.9.9.9,2620:fe::fe"]);
    assert_eq!(col(&dns, "dynamic-servers"), ["10.0.0.53"]);
    sim.shutdown().await;

    // SimConfig alone.
    let sim = start(SimConfig {
        ipv4_gateway: Some("192.0.2.1".parse().unwrap()),
        ipv6_gateway: Some("fe80::9".parse().unwrap()),
        dns_servers: Some(vec!["8.8.8.8".parse().unwrap()]),
        ..manual()
    })
    .await;
    let mut c = Client::admin(sim.local_addr()).await;
    let v4 = c.rows(&["/ip/route/print"]).await;
    assert_eq!(default_route(&v4, "0.0.0.0/0"), ["192.0.2.1"]);
    let v6 = c.rows(&["/ipv6/route/print"]).await;
    assert_eq!(default_route(&v6, "::/0"), ["fe80::9%ether1"]);
    assert_eq!(
        col(&c.rows(&["/ip/dns/print"]).await, "servers"),
        ["8.8.8.8"]
    );
    sim.shutdown().await;

    // Bad values name the key.
    for (text, key) in [
        ("[router]\nipv4_gateway = \"2001:db8::1\"\n", "ipv4_gateway"),
        ("[router]\ndns_servers = [\"one.one\"]\n", "dns_servers"),
        ("[router]\ngateway = \"1.2.3.4\"\n", "gateway"),
    ] {
        let e = Scenario::from_toml(text, "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{e}");
    }
}

#[tokio::test]
async fn uptime_follows_the_clock_and_restarts_at_a_reboot() {
    let sim = start(manual()).await;
    let uptime = |rows: Vec<routeros_proto::Reply>| col(&rows, "uptime").remove(0);
    let mut c = Client::admin(sim.local_addr()).await;
    assert_eq!(uptime(c.rows(&["/system/resource/print"]).await), "0s");
    sim.add_list_entry(Family::V4, "allowlist", "1.1.1.1", None, None)
        .unwrap();
    let blocked = sim
        .add_list_entry(
            Family::V4,
            "tls_block",
            "203.0.113.5",
            Some(Duration::from_secs(86_400)),
            None,
        )
        .unwrap();
    sim.add_list_entry(
        Family::V4,
        "tls_block",
        "203.0.113.6",
        Some(Duration::from_secs(86_400)),
        None,
    )
    .unwrap();
    sim.advance(Duration::from_secs(3_725));
    assert_eq!(uptime(c.rows(&["/system/resource/print"]).await), "1h2m5s");

    // A hand removal: one entry gone, uptime keeps counting.
    let r = c
        .call(&[
            "/ip/firewall/address-list/remove",
            &format!("=.id={blocked}"),
        ])
        .await;
    assert_eq!(kinds(&r), [ReplyKind::Done]);
    sim.advance(Duration::from_secs(10));
    assert_eq!(uptime(c.rows(&["/system/resource/print"]).await), "1h2m15s");
    assert_eq!(sim.address_list(Family::V4, "tls_block").len(), 1);

    // A reboot: every dynamic entry gone, static ones kept, uptime back to zero.
    sim.reboot();
    c.expect_eof().await;
    sim.advance(Duration::from_secs(2));
    let mut c = Client::admin(sim.local_addr()).await;
    assert_eq!(uptime(c.rows(&["/system/resource/print"]).await), "2s");
    assert!(sim.address_list(Family::V4, "tls_block").is_empty());
    assert_eq!(sim.address_list(Family::V4, "allowlist").len(), 1);
    sim.shutdown().await;
}
