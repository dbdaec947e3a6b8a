//! No crate of the workspace has an import cycle: no module of a crate's `src/` uses (through
//! `crate::`, `super::`, `self::` or a child module's name) a module that uses it back,
//! directly or through other modules.
//!
//! The check reads the source files, so it sees exactly what a reader sees: `use` items and
//! inline paths (`crate::generate::mix(..)`) alike. Comments are skipped, and so is the
//! `#[cfg(test)] mod tests` block at the end of a file (a test module importing its parent
//! with `use super::*` is not the parent importing anything).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`""` for the crate root, `dispatch::print`) of a file under `src/`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a file without comments and without its trailing test module.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The module a path (segments after its anchor) refers to: the longest prefix that is a known
/// module.
fn target(modules: &BTreeSet<String>, base: &str, segments: &[&str]) -> String {
    let mut best = base.to_owned();
    let mut cur = base.to_owned();
    for s in segments {
        cur = if cur.is_empty() {
            (*s).to_owned()
        } else {
            format!("{cur}::{s}")
        };
        if modules.contains(&cur) {
            best = cur.clone();
        } else {
            break;
        }
    }
    best
}

/// Parses `a::b::{c, d::e}` starting at `i` (just after an anchor's `::`), calling `found` with
/// the segments of every leaf path.
fn paths_at(code: &[u8], mut i: usize, prefix: &mut Vec<String>, found: &mut dyn FnMut(&[String])) {
    let start_len = prefix.len();
    loop {
        while i < code.len() && code[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < code.len() && code[i] == b'{' {
            // A group: each comma-separated element continues the prefix.
            i += 1;
            let mut depth = 0usize;
            let mut element_start = i;
            while i < code.len() {
                match code[i] {
                    b'{' => depth += 1,
                    b'}' if depth == 0 => {
                        paths_at(&code[..i], element_start, prefix, found);
                        break;
                    }
                    b'}' => depth -= 1,
                    b',' if depth == 0 => {
                        paths_at(&code[..i], element_start, prefix, found);
                        element_start = i + 1;
                    }
                    _ => {}
                }
                i += 1;
            }
            prefix.truncate(start_len);
            return;
        }
        let s = i;
        while i < code.len() && is_ident(code[i]) {
            i += 1;
        }
        if s == i {
            break;
        }
        prefix.push(String::from_utf8_lossy(&code[s..i]).into_owned());
        if code[i..].starts_with(b"::") {
            i += 2;
        } else {
            break;
        }
    }
    found(prefix);
    prefix.truncate(start_len);
}

/// Every module `module` refers to, given its code and the crate's modules.
fn deps_of(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let bytes = code.as_bytes();
    let parent = match module.rfind("::") {
        Some(i) => module[..i].to_owned(),
        None => String::new(),
    };
    let child = |name: &str| {
        if module.is_empty() {
            name.to_owned()
        } else {
            format!("{module}::{name}")
        }
    };
    let mut deps = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let s = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        if !bytes[i..].starts_with(b"::") {
            continue;
        }
        let word = &code[s..i];
        let base = match word {
            "crate" => String::new(),
            "super" => parent.clone(),
            "self" => module.to_owned(),
            w if modules.contains(&child(w)) => {
                // A child module named directly (`mod print; print::emit(..)`).
                let mut segs = vec![w.to_owned()];
                paths_at(bytes, i + 2, &mut segs, &mut |p| {
                    let refs: Vec<&str> = p.iter().map(String::as_str).collect();
                    deps.insert(target(modules, module, &refs));
                });
                continue;
            }
            _ => continue,
        };
        paths_at(bytes, i + 2, &mut Vec::new(), &mut |p| {
            let refs: Vec<&str> = p.iter().map(String::as_str).collect();
            deps.insert(target(modules, &base, &refs));
        });
    }
    deps.remove(module);
    deps
}

/// The import graph of the crate's `src/`.
fn graph_of(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    files
        .iter()
        .map(|(m, text)| (m.clone(), deps_of(m, &code_of(text), &modules)))
        .collect()
}

/// A cycle in the graph, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let at = path.iter().position(|p| p == node).unwrap_or(0);
                let mut cycle = path[at..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn show(name: &str) -> &str {
    if name.is_empty() {
        "lib"
    } else {
        name
    }
}

/// The source files of one crate, by module.
fn crate_files(src: &Path) -> Vec<(String, String)> {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    paths
        .iter()
        // A binary's `main.rs` is a crate of its own beside the library.
        .filter(|p| !(p.file_name().is_some_and(|n| n == "main.rs") && src.join("lib.rs").exists()))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "bin"))
        .map(|p| (module_of(src, p), std::fs::read_to_string(p).unwrap()))
        .collect()
}

#[test]
fn no_module_of_any_crate_imports_a_module_that_imports_it_back() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    let mut cycles = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let files = crate_files(&src);
        let graph = graph_of(&files);
        if let Some(cycle) = find_cycle(&graph) {
            let names: Vec<&str> = cycle.iter().map(|m| show(m)).collect();
            cycles.push(format!(
                "{}: {}",
                dir.file_name().unwrap().to_string_lossy(),
                names.join(" -> ")
            ));
        }
        checked += files.len();
    }
    assert!(checked > 80, "found only {checked} source files");
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_graph_is_read_from_real_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../routeros-sim/src");
    let graph = graph_of(&crate_files(&src));
    // The graph is not empty: the check would pass vacuously otherwise.
    assert!(graph[""].contains("server"), "lib does not use server?");
    let text = std::fs::read_to_string(src.join("kinds.rs")).unwrap();
    let leaf = graph_of(&[
        ("kinds".to_owned(), text),
        ("config".to_owned(), String::new()),
    ]);
    assert!(
        leaf["kinds"].is_empty(),
        "the simulator's leaf module uses {:?}",
        leaf["kinds"]
    );
}

/// The checker itself finds cycles of every shape it has to: direct, through a third module,
/// through `super::`, through a child named directly, and inside a `use` group; and it ignores
/// comments and test modules.
#[test]
fn the_checker_finds_cycles() {
    let graph = |files: &[(&str, &str)]| {
        graph_of(
            &files
                .iter()
                .map(|(m, t)| ((*m).to_owned(), (*t).to_owned()))
                .collect::<Vec<_>>(),
        )
    };
    let cyclic: &[&[(&str, &str)]] = &[
        &[("a", "use crate::b::X;"), ("b", "use crate::a::Y;")],
        &[
            ("a", "fn f() { crate::b::g() }"),
            ("b", "use crate::c;"),
            ("c", "use crate::{x::Z, a::W};"),
            ("x", ""),
        ],
        &[
            ("d", "mod p; fn f() { p::run() }"),
            ("d::p", "use super::Helper;"),
        ],
        &[
            ("s", "use crate::session;"),
            ("session", "use crate::s::Shared;"),
        ],
        &[("", "mod a;\npub use a::A;"), ("a", "use crate::A;")],
    ];
    for files in cyclic {
        assert!(
            find_cycle(&graph(files)).is_some(),
            "missed the cycle in {files:?}"
        );
    }
    let acyclic: &[&[(&str, &str)]] = &[
        &[("a", "use crate::b::X;"), ("b", "// use crate::a::Y;")],
        &[
            ("d", "mod p; mod q; fn f() { p::run() }"),
            ("d::p", "use super::q::Helper;"),
            ("d::q", ""),
        ],
        &[
            ("a", "use crate::b::X;"),
            ("b", "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::a::Y;\n}\n"),
        ],
    ];
    for files in acyclic {
        assert_eq!(find_cycle(&graph(files)), None, "{files:?}");
    }
}
