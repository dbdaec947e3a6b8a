//! `rosguard tune`: a sweep of detection settings over a recording, with and without labels,
//! its frontier, suggestion, chart and the settings it cannot answer.

use std::path::PathBuf;

use rosguard::admin::{sweep, Grid, Labels, Point, Sweep};
use rosguard::recording::Reader;
use rosguard_core::settings::Settings;

use crate::support::{bare, output};

fn fixture(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn lab_sweep(grid: &Grid, threads: usize) -> Sweep {
    let reader = Reader::open(&fixture("lab-default-traffic.rec")).unwrap();
    let labels = Labels::read(&fixture("lab-default-traffic.labels")).unwrap();
    let base = Settings::default();
    sweep(
        reader,
        "lab",
        &base,
        &grid.points(Point::of(&base)),
        Some(labels),
        threads,
    )
    .unwrap()
}

fn at(s: &Sweep, orig: u64, repl: u64, obs: u32, flagged: u32) -> &rosguard::admin::Row {
    s.settings
        .iter()
        .find(|r| {
            let p = r.setting;
            (
                p.min_orig_packets,
                p.max_repl_packets,
                p.min_observations,
                p.min_flagged_connections,
            ) == (orig, repl, obs, flagged)
        })
        .unwrap_or_else(|| panic!("no setting {orig}/{repl}/{obs}/{flagged}"))
}

/// On the lab's labelled traffic the defaults find every offender and no good host; a looser
/// min_orig_packets catches good servers too and falls off the frontier; the suggestion is
/// precise and complete.
#[test]
fn the_lab_recording_tunes_to_its_labels() {
    let s = lab_sweep(&Grid::default(), 2);
    assert!(s.labelled);
    assert_eq!(s.polls, 20);
    let current = at(&s, 3, 2, 1, 1);
    assert!(current.current && current.frontier);
    assert_eq!(
        (
            current.true_positives,
            current.false_positives,
            current.missed
        ),
        (Some(10), Some(0), Some(0))
    );
    assert_eq!(current.blocked, 10);
    // Every block of the defaults is a day long.
    assert_eq!(current.block_hours, 240.0);
    let loose = at(&s, 2, 2, 1, 1);
    assert_eq!(loose.true_positives, Some(10));
    assert!(loose.false_positives.unwrap() >= 2, "{loose:?}");
    assert!(!loose.frontier);
    let strict = at(&s, 8, 0, 3, 3);
    assert!(strict.missed.unwrap() > 0, "{strict:?}");
    let best = &s.settings[s.suggested.expect("a suggestion")];
    assert_eq!((best.precision, best.recall), (Some(1.0), Some(1.0)));
    // Among the many perfect settings it is the current one: nothing to change.
    assert!(best.current, "{best:?}");
    assert!(s.reason.contains("F1 1.00"), "{}", s.reason);
}

/// The sweep is the same whether the settings share one thread or are split over several.
#[test]
fn the_sweep_does_not_depend_on_the_threads() {
    let grid = Grid {
        min_orig_packets: vec![2, 3, 5],
        max_repl_packets: vec![1, 2],
        min_observations: vec![1, 2],
        min_flagged_connections: vec![1, 2],
        window: vec![std::time::Duration::from_secs(60)],
    };
    let a = serde_json::to_value(&lab_sweep(&grid, 1).settings).unwrap();
    let b = serde_json::to_value(&lab_sweep(&grid, 3).settings).unwrap();
    assert_eq!(a, b);
}

/// A setting looser than the recording's pre-filter is not replayed and says why, in the
/// sweep and in the output.
#[tokio::test]
async fn a_setting_looser_than_the_recording_is_not_answered() {
    let grid = Grid {
        min_orig_packets: vec![3],
        max_repl_packets: vec![2, 20],
        min_observations: vec![1],
        min_flagged_connections: vec![1],
        window: vec![std::time::Duration::from_secs(60)],
    };
    let s = lab_sweep(&grid, 2);
    let wide = at(&s, 3, 20, 1, 1);
    assert!(!wide.answered && !wide.frontier);
    assert!(
        wide.not_answered[0].contains("max_repl_packets = 20"),
        "{wide:?}"
    );
    let file = fixture("lab-default-traffic.rec");
    let (ok, out, err) = output(bare(&[
        "tune",
        file.to_str().unwrap(),
        "--max-repl-packets",
        "2,20",
        "--min-orig-packets",
        "3",
        "--min-observations",
        "1",
        "--min-flagged-connections",
        "1",
        "--all",
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("1 NOT ANSWERED"), "{out}");
    let line = out.lines().find(|l| l.contains("NOT ANSWERED:")).unwrap();
    assert!(line.contains("max_repl_packets = 20 is looser"), "{line}");
}

/// `--chart` writes a PNG of the sweep, `--json` the whole sweep.
#[tokio::test]
async fn the_chart_is_a_png_and_the_json_names_the_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("tune.png");
    let file = fixture("lab-default-traffic.rec");
    let labels = fixture("lab-default-traffic.labels");
    let (ok, out, err) = output(bare(&[
        "tune",
        file.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--chart",
        png.to_str().unwrap(),
        "--json",
    ]))
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let i = v["suggested"].as_u64().unwrap() as usize;
    assert_eq!(v["settings"][i]["precision"], 1.0);
    assert_eq!(v["settings"].as_array().unwrap().len(), 240);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize,
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()) as usize,
    );
    let idat = bytes.windows(4).position(|c| c == b"IDAT").unwrap();
    let len = u32::from_be_bytes(bytes[idat - 4..idat].try_into().unwrap()) as usize;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::ZlibDecoder::new(&bytes[idat + 4..idat + 4 + len]),
        &mut raw,
    )
    .unwrap();
    assert_eq!(raw.len(), (w * 3 + 1) * h);
    // The suggestion's red dot is drawn.
    let red = raw
        .chunks(w * 3 + 1)
        .flat_map(|row| row[1..].chunks(3))
        .filter(|p| p == &[210, 40, 40])
        .count();
    assert!(red > 20, "{red} red pixels");
}

/// A labels file that cannot be read names the file and the line.
#[tokio::test]
async fn a_bad_labels_file_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "bad 203.0.113.20\nsuspicious 192.0.2.1\n").unwrap();
    let file = fixture("lab-default-traffic.rec");
    let (ok, _, err) = output(bare(&[
        "tune",
        file.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]))
    .await;
    assert!(!ok);
    assert!(
        err.contains("labels.txt") && err.contains("line 2"),
        "{err}"
    );
}

/// Without labels the suggestion blocks the most of what the allowlist did not flag, and names
/// what it would block beyond the current setting: on the lab's traffic, the four good servers
/// a looser min_orig_packets catches.
#[tokio::test]
async fn without_labels_the_suggestion_names_what_it_adds_to_the_current() {
    let reader = Reader::open(&fixture("lab-default-traffic.rec")).unwrap();
    let base = Settings::default();
    let s = sweep(
        reader,
        "lab",
        &base,
        &Grid::default().points(Point::of(&base)),
        None,
        2,
    )
    .unwrap();
    assert!(!s.labelled);
    let best = &s.settings[s.suggested.unwrap()];
    assert_eq!(best.setting.min_orig_packets, 2, "{best:?}");
    assert_eq!(best.allowlist_caught, 0);
    let extra: Vec<String> = s.only_suggested.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        extra,
        [
            "203.0.113.50",
            "203.0.113.60",
            "2001:db8:113::50",
            "2001:db8:113::60"
        ]
    );
    assert!(s.only_current.is_empty());
    let file = fixture("lab-default-traffic.rec");
    let (ok, out, err) = output(bare(&["tune", file.to_str().unwrap()])).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("it also blocks what the current setting does not: 203.0.113.50"),
        "{out}"
    );
    assert!(out.contains("label them (--labels)"), "{out}");
}

/// A recording without a complete poll has nothing to tune on, and says so.
#[tokio::test]
async fn a_recording_without_polls_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.rec");
    let header = rosguard::recording::Header::new(
        "lab",
        rosguard::recording::Prefilter::for_settings(&Settings::default()),
        1.0e9,
    );
    let w =
        rosguard::recording::Writer::new(std::fs::File::create(&file).unwrap(), &header).unwrap();
    drop(w);
    let (ok, _, err) = output(bare(&["tune", file.to_str().unwrap()])).await;
    assert!(!ok);
    assert!(err.contains("empty.rec holds no complete poll"), "{err}");
}

/// A grid too large to sweep is refused before anything is replayed, with the flags to narrow.
#[tokio::test]
async fn a_grid_past_the_settings_limit_is_refused() {
    let file = fixture("lab-default-traffic.rec");
    let many: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
    let many = many.join(",");
    let (ok, _, err) = output(bare(&[
        "tune",
        file.to_str().unwrap(),
        "--min-orig-packets",
        &many,
        "--max-repl-packets",
        &many,
        "--min-observations",
        "1,2,3,4",
    ]))
    .await;
    assert!(!ok);
    assert!(
        err.contains("holds 32000 settings, more than the 5000"),
        "{err}"
    );
}
