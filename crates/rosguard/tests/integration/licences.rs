//! The project is MIT: nothing that ships in the `rosguard` binary may be GPL, AGPL or LGPL.
//!
//! Reads the dependency graph from `cargo metadata` (the lockfile as committed) and walks the
//! normal and build dependencies of the `rosguard` package. A package licensed under several
//! alternatives (`MIT OR LGPL-2.1-or-later`) passes when one alternative is free of the GPL
//! family; one with no SPDX licence at all fails, so that it is looked at.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

/// True when an SPDX expression can be used without accepting a GPL-family licence: one of its
/// `OR` alternatives has no GPL-family term. (`AND` binds tighter than `OR` in SPDX.)
fn permits_non_gpl(expr: &str) -> bool {
    let flat = expr.replace(['(', ')'], " ").replace('/', " OR ");
    flat.split(" OR ").any(|alt| {
        !alt.split(" AND ")
            .any(|t| t.to_ascii_uppercase().contains("GPL"))
    })
}

#[test]
fn the_licence_check_tells_gpl_from_permissive() {
    assert!(permits_non_gpl("MIT OR Apache-2.0"));
    assert!(permits_non_gpl("MIT/Apache-2.0"));
    assert!(permits_non_gpl("MIT OR Apache-2.0 OR LGPL-2.1-or-later"));
    assert!(permits_non_gpl("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(!permits_non_gpl("GPL-2.0-only"));
    assert!(!permits_non_gpl("AGPL-3.0-or-later"));
    assert!(!permits_non_gpl("LGPL-2.1 OR GPL-3.0"));
    assert!(!permits_non_gpl("MIT AND GPL-2.0"));
}

#[test]
fn no_shipped_dependency_is_gpl_licensed() {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages: HashMap<&str, &Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = packages
        .values()
        .find(|p| p["name"] == "rosguard")
        .map(|p| p["id"].as_str().unwrap())
        .expect("the rosguard package");

    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue = VecDeque::from([root]);
    let mut bad = Vec::new();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        let p = packages[id];
        match p["license"].as_str() {
            Some(l) if permits_non_gpl(l) => {}
            other => bad.push(format!("{} {}: {:?}", p["name"], p["version"], other)),
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let shipped = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if shipped {
                queue.push_back(dep["pkg"].as_str().unwrap());
            }
        }
    }
    assert!(seen.len() > 50, "walked only {} packages", seen.len());
    assert!(
        bad.is_empty(),
        "GPL-family or unlicensed dependencies: {bad:#?}"
    );
}
