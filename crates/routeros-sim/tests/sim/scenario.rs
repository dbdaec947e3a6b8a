//! Scenario files: errors that name the key, and the demo scenario played on the manual clock.

use std::collections::BTreeSet;
use std::time::Duration;

use routeros_sim::{demo_scenario, Scenario, SimConfig};

use crate::client::{col, Client};
use crate::{manual, start};

#[test]
fn parse_errors_name_the_key() {
    let cases = [
        (
            "[[flow]]\nkind = \"normal\"\nsrc = \"192.168.88.5\"\ndst = \"1.2.3.4:443\"\nrate = 5\n",
            "rate",
        ),
        ("[[allowlist]]\naddress = \"1.1.1.1\"\nlsit = \"x\"\n", "lsit"),
        (
            "[[flow]]\nkind = \"tls-freeze\"\nsrc = \"192.168.88.5\"\ndst = \"1.2.3.4:443\"\nvary = \"everything\"\n",
            "everything",
        ),
        (
            "[[flow]]\nkind = \"normal\"\nsrc = \"192.168.88.5\"\ndst = \"[2001:db8::1]:443\"\n",
            "`src` and `dst`",
        ),
        (
            "[[flow]]\nkind = \"normal\"\nsrc = \"192.168.88.5\"\ndst = \"1.2.3.4:443\"\n\n[[flow]]\nkind = \"scan\"\nsrc = \"nowhere\"\ndst = \"1.2.3.4:1\"\n",
            "[[flow]] #2: `src`",
        ),
        (
            "[[flow]]\nkind = \"normal\"\nsrc = \"192.168.88.5\"\ndst = \"1.2.3.4:443\"\nduration = \"forever\"\n",
            "`duration`",
        ),
        ("[[flow]]\nkind = \"udp-spray\"\nsrc = \"192.168.88.5\"\ndst = \"1.2.3.4:443\"\nprotocol = \"tcp\"\n", "`protocol`"),
        ("[generate]\nconnections = 10\nseeed = 1\n", "seeed"),
        ("flows = []\n", "flows"),
    ];
    for (text, key) in cases {
        let e = Scenario::from_toml(text, "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "error for {key:?} does not name it: {e}");
        assert!(e.contains("bad.toml"), "{e}");
    }
}

#[test]
fn the_shipped_example_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/example.toml");
    let s = Scenario::from_file(&path).unwrap();
    assert!(s.flows.len() >= 5);
    assert!(s.generate.is_some());
    assert_eq!(
        s.router.session_address,
        Some("192.0.2.10".parse().unwrap())
    );
    // SCENARIO.md reproduces the example verbatim.
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("SCENARIO.md"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        doc.contains(&format!("```toml\n{text}```")),
        "SCENARIO.md's copy of example.toml is out of date"
    );
    let e = Scenario::from_file(std::path::Path::new("/nonexistent/x.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
}

const FLAGGED: [&str; 4] = [
    "/ip/firewall/connection/print",
    "=.proplist=dst-address,orig-packets,repl-packets",
    "?>orig-packets=3",
    "?<repl-packets=3",
];

async fn flagged(c: &mut Client, v6: bool) -> BTreeSet<String> {
    let mut words = FLAGGED.to_vec();
    if v6 {
        words[0] = "/ipv6/firewall/connection/print";
    }
    col(&c.rows(&words).await, "dst-address")
        .into_iter()
        .collect()
}

#[tokio::test]
async fn the_demo_flags_what_it_should_within_ten_seconds() {
    let sim = start(SimConfig {
        scenario: Some(demo_scenario()),
        ..manual()
    })
    .await;
    let mut c = Client::admin(sim.local_addr()).await;
    let allow = c
        .rows(&["/ip/firewall/address-list/print", "?list=allowlist"])
        .await;
    assert_eq!(col(&allow, "address"), ["1.1.1.1"]);
    assert!(flagged(&mut c, false).await.is_empty());
    let anomalous: BTreeSet<String> = [
        "203.0.113.45",
        "203.0.113.46",
        "192.0.2.80",
        "203.0.113.100",
        "203.0.113.101",
        "203.0.113.102",
        "203.0.113.103",
        "1.1.1.1",
        "192.168.88.1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    // Second by second, nothing but the anomalous flows is ever flagged.
    for _ in 0..10 {
        sim.advance(Duration::from_secs(1));
        let now = flagged(&mut c, false).await;
        assert!(now.is_subset(&anomalous), "unexpected: {now:?}");
    }
    assert_eq!(flagged(&mut c, false).await, anomalous);
    assert_eq!(
        flagged(&mut c, true).await,
        BTreeSet::from(["2001:db8:85a3::10".to_owned()])
    );
    // Normal traffic is there too, and much of it.
    let all = c
        .rows(&["/ip/firewall/connection/print", "=.proplist=.id"])
        .await;
    assert!(all.len() > anomalous.len() + 10, "{} rows", all.len());
    // Long after the flows ended and conntrack timed them out, the frozen flows are gone.
    sim.advance(Duration::from_secs(200));
    assert!(flagged(&mut c, false).await.is_empty());
    sim.shutdown().await;
}
