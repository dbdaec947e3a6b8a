//! The documentation's examples are checked against the code, so they cannot drift.

/// The fenced blocks of `lang` in the README.
fn readme_blocks(lang: &str) -> Vec<String> {
    let readme = include_str!("../../../../README.md");
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = readme;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("closed fence");
        out.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn the_readme_scenario_example_parses() {
    let blocks: Vec<String> = readme_blocks("toml")
        .into_iter()
        .filter(|b| b.contains("[[flow]]"))
        .collect();
    assert!(!blocks.is_empty(), "the README has TOML blocks");
    assert_eq!(blocks.len(), 1, "one scenario example in the README");
    let s = routeros_sim::Scenario::from_toml(&blocks[0], "README.md").unwrap();
    assert_eq!(s.flows.len(), 3);
}

#[test]
fn the_readme_firewall_rules_are_what_the_firewall_command_prints() {
    let d = rosguard_core::Detection::default();
    let rules = rosguard::admin::firewall_rules("tls_block", d.block_target, &d.scan.staging_list);
    assert_eq!(rules.len(), 6, "four drop rules for remote, two psd rules");
    let blocks = readme_blocks("routeros");
    let shown = blocks
        .iter()
        .find(|b| b.contains("rosguard-firewall:"))
        .expect("the firewall example");
    for r in &rules {
        let line = r.cli("ip");
        assert!(shown.contains(&line), "README lacks {line}");
    }
    assert_eq!(
        shown
            .lines()
            .filter(|l| l.starts_with("/ip firewall filter add"))
            .count(),
        rules.len(),
        "the README shows exactly the default rules"
    );
}

#[test]
fn every_command_in_the_readme_table_exists() {
    let readme = include_str!("../../../../README.md");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rosguard"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `rosguard "))
        .collect();
    assert!(
        rows.len() >= 10,
        "the README's command table: {} rows",
        rows.len()
    );
    for line in rows {
        let cmd = line
            .trim_start_matches("| `rosguard ")
            .split([' ', '`'])
            .next()
            .unwrap();
        assert!(
            help.contains(&format!("  {cmd} ")),
            "README names `rosguard {cmd}`, --help does not"
        );
    }
}

/// Every key of every section, `detection.scan.min_ports` style, from the types the config is
/// read into (optional keys given a value, so that they show).
fn config_keys() -> Vec<String> {
    fn flatten(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            let key = format!("{prefix}.{k}");
            match v {
                toml::Value::Table(t) => flatten(&key, t, out),
                _ => out.push(key),
            }
        }
    }
    let daemon = rosguard::config::DaemonSettings {
        state_dir: Some("/var/lib/rosguard".into()),
        metrics_listen: Some("127.0.0.1:9464".parse().unwrap()),
        ..Default::default()
    };
    let record = rosguard::config::RecordSettings {
        dir: Some("/var/lib/rosguard/recordings".into()),
        ..Default::default()
    };
    let mut out = Vec::new();
    for (section, value) in [
        (
            "detection",
            toml::Table::try_from(rosguard_core::Detection::default()),
        ),
        (
            "blocking",
            toml::Table::try_from(rosguard_core::Blocking::default()),
        ),
        ("daemon", toml::Table::try_from(daemon)),
        ("record", toml::Table::try_from(record)),
    ] {
        flatten(section, &value.unwrap(), &mut out);
    }
    out
}

/// The configuration reference names every key, and the shipped example shows every key (the
/// optional ones commented out) in its section.
#[test]
fn every_config_key_is_in_the_reference_and_the_example() {
    let readme = include_str!("../../../../README.md");
    let example = include_str!("../../../../dist/rosguard.example.toml");
    let keys = config_keys();
    assert!(keys.len() > 40, "{keys:?}");
    for key in &keys {
        assert!(
            readme.contains(&format!("`{key}`")),
            "the README's configuration reference lacks `{key}`"
        );
        let (section, name) = key.rsplit_once('.').unwrap();
        let header = format!("[{section}]");
        let body = example
            .lines()
            .map(|l| l.trim_start_matches('#').trim_start())
            .skip_while(|l| *l != header)
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .any(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
        assert!(body, "dist/rosguard.example.toml lacks {name} in {header}");
    }
}
