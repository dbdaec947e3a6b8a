//! The `rosguard sim` arguments and run function.

use clap::{CommandFactory, Parser};
use routeros_sim::{run_cli, AddressFormat, FastTrackCounters, QueryCompare, SimArgs, SimTls};

use crate::client::{Client, WAIT};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

#[test]
fn help_is_well_formed_and_flags_map_to_the_config() {
    Cli::command().debug_assert();
    let help = Cli::command().render_long_help().to_string();
    for flag in [
        "--listen",
        "--scenario",
        "--connections",
        "--anomaly-share",
        "--address-format",
        "--string-compare",
        "--no-empty",
        "--legacy-login",
        "--user",
        "--tls",
        "--tls-cert",
        "--tls-key",
        "--max-sessions",
        "--seed",
        "--session-address",
        "--ipv4-gateway",
        "--ipv6-gateway",
        "--dns-server",
        "--dynamic-dns-server",
        "--fasttrack-counters",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let cli = Cli::try_parse_from([
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--connections",
        "1000",
        "--anomaly-share",
        "0.5",
        "--address-format",
        "combined",
        "--string-compare",
        "--no-empty",
        "--legacy-login",
        "--user",
        "ops:pw",
        "--user",
        "ro:",
        "--tls",
        "--max-sessions",
        "3",
        "--seed",
        "9",
        "--session-address",
        "10.0.0.9",
        "--ipv4-gateway",
        "198.51.100.254",
        "--ipv6-gateway",
        "2001:db8::1",
        "--dns-server",
        "9.9.9.9",
        "--dns-server",
        "2620:fe::fe",
        "--dynamic-dns-server",
        "192.168.88.1",
        "--fasttrack-counters",
        "only-fasttracked",
    ])
    .unwrap();
    let cfg = cli.sim.to_config().unwrap();
    assert_eq!(
        cfg.users,
        [("ops".into(), "pw".into()), ("ro".into(), String::new())]
    );
    assert_eq!(cfg.address_format, AddressFormat::Combined);
    assert_eq!(cfg.query_compare, QueryCompare::String);
    assert!(!cfg.empty_replies && cfg.legacy_login);
    assert_eq!(cfg.tls, Some(SimTls::GeneratedSelfSigned));
    assert_eq!(cfg.max_sessions, Some(3));
    let g = cfg.generate.unwrap();
    assert_eq!((g.connections, g.anomaly_share, g.seed), (1000, 0.5, 9));
    assert_eq!(cfg.session_address, Some("10.0.0.9".parse().unwrap()));
    assert_eq!(cfg.fasttrack_counters, FastTrackCounters::OnlyFastTracked);
    assert_eq!(cfg.ipv4_gateway, Some("198.51.100.254".parse().unwrap()));
    assert_eq!(cfg.ipv6_gateway, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(
        cfg.dns_servers,
        Some(vec![
            "9.9.9.9".parse().unwrap(),
            "2620:fe::fe".parse().unwrap()
        ])
    );
    assert_eq!(
        cfg.dynamic_dns_servers,
        Some(vec!["192.168.88.1".parse().unwrap()])
    );

    let defaults = Cli::try_parse_from(["sim"])
        .unwrap()
        .sim
        .to_config()
        .unwrap();
    assert_eq!(defaults.users, [("admin".into(), String::new())]);
    assert!(defaults.empty_replies);
    assert_eq!(
        defaults.dns_servers, None,
        "no flag: the scenario's or the default"
    );
    assert_eq!(defaults.session_address, None);
    assert_eq!(defaults.fasttrack_counters, FastTrackCounters::Always);
    assert!(Cli::try_parse_from(["sim", "--user", "nocolon"]).is_err());
    assert!(Cli::try_parse_from(["sim", "--tls-cert", "x.pem"]).is_err());
    let bad = Cli::try_parse_from(["sim", "--connections", "5", "--anomaly-share", "1.5"]).unwrap();
    assert!(bad.sim.to_config().is_err());
}

#[tokio::test]
async fn run_cli_serves_until_shutdown() {
    // Port 0 would hide the address from us, so pick a free one first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let cli = Cli::try_parse_from(["sim", "--listen", &listen, "--connections", "100"]).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run_cli(cli.sim, async {
        let _ = stopped.await;
    }));
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut c = loop {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            break Client::over(Box::new(s));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run_cli never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    c.login("admin", "").await;
    let r = c
        .call(&["/ip/firewall/connection/print", "=count-only="])
        .await;
    let v4: u64 = r[0].ret().unwrap().parse().unwrap();
    assert!(v4 > 80 && v4 <= 100, "{v4}");
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("run_cli did not stop")
        .unwrap()
        .unwrap();
}
