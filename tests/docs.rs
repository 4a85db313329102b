//! The manual against the program (issue 21): README's flags table against
//! `--help` (every flag in one is in the other, with the same default), its
//! knobs table against the knob parser, every limit docs/limits.md states
//! against a test that names it, and docs/architecture.md against the tree (every
//! file named; `impl Server` only in the loop's files; no file over 600 lines).
//! (`tests/docs.sh` runs the README's examples.)

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const README: &str = include_str!("../README.md");
const LIMITS: &str = include_str!("../docs/limits.md");

/// The rows of the first table after `heading`, as cells (trimmed).
fn table_after(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and |---|
        .map(|l| {
            // `\|` inside a cell is a literal bar, not a separator.
            l.replace("\\|", "\u{1}")
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('\u{1}', "|"))
                .collect()
        })
        .collect()
}

fn flags_in(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| code.split_whitespace().next())
        .filter(|w| w.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// `--flag` -> its `[default: X]` in `echocast --help`, if any.
fn help_flags() -> BTreeMap<String, Option<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_echocast"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let t = line.trim_start();
        let flag_line = line.starts_with("  ") && (t.starts_with("--") || t.starts_with("-"));
        if flag_line && line.len() - t.len() <= 6 {
            let name = t
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap()
                .to_string();
            flags.insert(name.clone(), None);
            current = Some(name);
        } else if let (Some(name), Some(i)) = (&current, t.find("[default: ")) {
            let rest = &t[i + "[default: ".len()..];
            flags.insert(
                name.clone(),
                Some(rest[..rest.find(']').unwrap()].to_string()),
            );
        }
    }
    flags
}

#[test]
fn the_flags_table_is_the_help() {
    let help = help_flags();
    let mut table = BTreeMap::new();
    for row in table_after(README, "## Flags") {
        for flag in flags_in(&row[0]) {
            table.insert(flag, row[1].trim_matches('`').to_string());
        }
    }
    let (h, t): (BTreeSet<_>, BTreeSet<_>) = (help.keys().collect(), table.keys().collect());
    assert_eq!(
        h,
        t,
        "flags in --help but not in README's table: {:?}; in the table but not in --help: {:?}",
        h.difference(&t).collect::<Vec<_>>(),
        t.difference(&h).collect::<Vec<_>>()
    );
    for (flag, default) in &help {
        let documented = &table[flag];
        match default {
            Some(d) => assert_eq!(documented, d, "README's default for {flag}"),
            None => assert!(
                ["off", "none", "no limit", "any", "—", ""].contains(&documented.as_str()),
                "{flag} has no default in --help, but README says {documented:?}"
            ),
        }
    }
}

#[test]
fn the_knobs_table_is_the_parser() {
    let mut documented = BTreeSet::new();
    for row in table_after(README, "| Knob | B | Effect |") {
        for code in row[0].split('`').skip(1).step_by(2) {
            for part in code.split('&') {
                if let Some((name, _)) = part.split_once('=') {
                    documented.insert(name.to_string());
                }
            }
        }
    }
    let known: BTreeSet<String> = echocast::proto::knobs::NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        documented, known,
        "README's knobs table against knobs::NAMES"
    );
    // NAMES is the parser's: each name, given a value no knob accepts, is
    // refused by name (greeting takes any text); an unknown one is ignored.
    for name in echocast::proto::knobs::NAMES {
        let r = echocast::proto::knobs::parse(&format!("/?{name}=%FF-not-a-value"));
        match *name {
            "greeting" => assert!(r.unwrap().greeting.is_some()),
            _ => assert_eq!(r.unwrap_err().knob, *name),
        }
    }
    assert!(echocast::proto::knobs::parse("/?fragmentx=0").is_ok());
}

/// Every limit docs/limits.md states (a row of its limits table or of its
/// URL knobs table) is checked by a test that names it with a comment
/// `docs/limits.md: "<the row's first cell>"`, and every such comment names a
/// row that exists.
#[test]
fn every_limit_in_docs_limits_md_is_named_by_a_test() {
    let mut rows: BTreeSet<String> = BTreeSet::new();
    for heading in ["| Limit | Default |", "| Knob | Accepts |"] {
        for row in table_after(LIMITS, heading) {
            rows.insert(row[0].clone());
        }
    }
    assert!(rows.len() >= 25, "{rows:?}");
    let mut named: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut files = Vec::new();
    for dir in ["tests", "src"] {
        let mut stack = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    if !p.ends_with("node_modules") {
                        stack.push(p);
                    }
                } else if p
                    .extension()
                    .is_some_and(|x| x == "rs" || x == "sh" || x == "py")
                {
                    files.push(p);
                }
            }
        }
    }
    let marker = ["docs/limits.md: ", "\""].concat();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if let Some(rest) = line.split_once(&marker).map(|(_, r)| r) {
                let Some(cell) = rest.strip_suffix('"') else {
                    continue;
                };
                named.entry(cell.to_string()).or_default().push(format!(
                    "{}:{}",
                    f.display(),
                    i + 1
                ));
            }
        }
    }
    let unnamed: Vec<_> = rows.iter().filter(|r| !named.contains_key(*r)).collect();
    assert!(
        unnamed.is_empty(),
        "limits with no test naming them: {unnamed:?}"
    );
    let stale: Vec<_> = named.keys().filter(|n| !rows.contains(*n)).collect();
    assert!(
        stale.is_empty(),
        "tests name limits that are not rows: {stale:?}"
    );
}

/// docs/architecture.md names every file of the driver and its components,
/// and the layout it describes holds: `impl Server` only in the loop's own
/// files, no source file over 600 lines (a file that grows past it holds
/// two concerns).
#[test]
fn the_architecture_page_names_every_file_and_its_rules_hold() {
    let doc = std::fs::read_to_string("docs/architecture.md").unwrap();
    let loop_files = [
        "mod.rs",
        "io.rs",
        "http.rs",
        "rooms.rs",
        "inspecting.rs",
        "streams.rs",
    ];
    for dir in ["src/server", "src/rooms", "src/inspector"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name == "tests.rs" {
                continue;
            }
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/architecture.md does not name {dir}/{name}"
            );
        }
    }
    let mut stack = vec![std::path::PathBuf::from("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines = text.lines().count();
            assert!(lines <= 600, "{} has {lines} lines", path.display());
            let name = path.file_name().unwrap().to_str().unwrap();
            let in_server = path.parent().is_some_and(|p| p.ends_with("src/server"));
            if text.lines().any(|l| l.starts_with("impl Server {")) {
                assert!(
                    in_server && loop_files.contains(&name),
                    "{}: an impl Server block outside the loop's files {loop_files:?}",
                    path.display()
                );
            }
        }
    }
}
