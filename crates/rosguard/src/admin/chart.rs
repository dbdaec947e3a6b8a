//! `rosguard tune --chart`: the sweep as a PNG scatter plot, one dot per setting: what it
//! caught (up) against what it caught wrongly (right). With labels that is bad addresses
//! blocked against good ones blocked; without, addresses blocked against the allowlisted ones
//! it flagged. The frontier is blue, the current setting ringed, the suggestion red.
//!
//! It draws with its own few primitives (dots, lines, a 5x7 bitmap font) and encodes the PNG
//! itself (stored RGB scanlines, zlib by `flate2`, CRC-32): a chart needs no font files and
//! no image crate. It deliberately draws nothing but this one plot.

use std::io::Write;

use flate2::write::ZlibEncoder;
use flate2::Compression;

/// One setting, as the chart draws it.
#[derive(Debug, Clone, Copy)]
pub struct Dot {
    /// What it caught wrongly (right).
    pub x: f64,
    /// What it caught (up).
    pub y: f64,
    pub frontier: bool,
    pub current: bool,
    pub suggested: bool,
}

/// What the chart shows.
pub struct Plot {
    /// The settings replayed.
    pub dots: Vec<Dot>,
    /// The axes are labels' counts (bad and good blocked), not blocked and allowlisted.
    pub labelled: bool,
    pub polls: usize,
    /// Settings not answered (not drawn, counted in a corner).
    pub not_answered: usize,
}

const W: usize = 720;
const H: usize = 480;
const LEFT: usize = 70;
const RIGHT: usize = 24;
const TOP: usize = 56;
const BOTTOM: usize = 56;
/// The space between the axes and the outermost dots.
const PAD: f64 = 14.0;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];
const OTHER: Rgb = [150, 150, 150];
const FRONTIER: Rgb = [30, 90, 200];
const SUGGESTED: Rgb = [210, 40, 40];
const NOT_ANSWERED: Rgb = [235, 170, 60];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            px: WHITE.repeat(W * H),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    fn dot(&mut self, x: i64, y: i64, r: i64, c: Rgb) {
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r {
                    self.set(x + dx, y + dy, c);
                }
            }
        }
    }

    fn ring(&mut self, x: i64, y: i64, r: i64, c: Rgb) {
        for dy in -r..=r {
            for dx in -r..=r {
                let d = dx * dx + dy * dy;
                if d <= r * r && d >= (r - 2) * (r - 2) {
                    self.set(x + dx, y + dy, c);
                }
            }
        }
    }

    /// Text in the 5x7 font at `scale`; `vertical` reads bottom to top.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb, vertical: bool) {
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            let k = k as i64 * 6 * scale;
            for (gy, row) in g.iter().enumerate() {
                for gx in 0..5 {
                    if row & (0x10 >> gx) != 0 {
                        let (px, py) = (gx as i64 * scale, gy as i64 * scale);
                        let (ox, oy) = if vertical {
                            (x + py, y - k - px)
                        } else {
                            (x + k + px, y + py)
                        };
                        self.rect(ox, oy, scale, scale, c);
                    }
                }
            }
        }
    }

    fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 6 * scale
    }

    fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity((W * 3 + 1) * H);
        for row in self.px.chunks(W * 3) {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        // Writing to a Vec cannot fail.
        let _ = z.write_all(&raw);
        let idat = z.finish().unwrap_or_default();
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(W as u32).to_be_bytes());
        ihdr.extend_from_slice(&(H as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &idat);
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (ISO-HDLC, the one PNG uses).
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A round step for about five ticks up to `max`.
fn step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The chart, as PNG bytes.
pub fn render(s: &Plot) -> Vec<u8> {
    let mut c = Canvas::new();
    let (xs, ys) = if s.labelled {
        (
            "GOOD ADDRESSES BLOCKED (FALSE POSITIVES)",
            "BAD ADDRESSES BLOCKED",
        )
    } else {
        ("ALLOWLISTED ADDRESSES FLAGGED", "ADDRESSES BLOCKED")
    };
    let dots = &s.dots;
    let xmax = dots.iter().map(|d| d.x).fold(1.0, f64::max);
    let ymax = dots.iter().map(|d| d.y).fold(1.0, f64::max);
    let (xstep, ystep) = (step(xmax), step(ymax));
    let (xmax, ymax) = ((xmax / xstep).ceil() * xstep, (ymax / ystep).ceil() * ystep);
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    // Dots keep clear of the axes.
    let (iw, ih) = (pw - 2.0 * PAD, ph - 2.0 * PAD);
    let at = |x: f64, y: f64| -> (i64, i64) {
        (
            LEFT as i64 + (PAD + x / xmax * iw) as i64,
            (H - BOTTOM) as i64 - (PAD + y / ymax * ih) as i64,
        )
    };
    // Grid and ticks.
    let mut v = 0.0;
    while v <= xmax + 1e-9 {
        let (x, _) = at(v, 0.0);
        c.rect(x, TOP as i64, 1, ph as i64, GRID);
        let label = format!("{v}");
        c.text(
            x - Canvas::text_width(&label, 1) / 2,
            (H - BOTTOM) as i64 + 8,
            &label,
            1,
            INK,
            false,
        );
        v += xstep;
    }
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let (_, y) = at(0.0, v);
        c.rect(LEFT as i64, y, pw as i64, 1, GRID);
        let label = format!("{v}");
        c.text(
            LEFT as i64 - 8 - Canvas::text_width(&label, 1),
            y - 3,
            &label,
            1,
            INK,
            false,
        );
        v += ystep;
    }
    c.rect(LEFT as i64, TOP as i64, 1, ph as i64 + 1, INK);
    c.rect(LEFT as i64, (H - BOTTOM) as i64, pw as i64, 1, INK);
    c.text(
        LEFT as i64 + (pw as i64 - Canvas::text_width(xs, 1)) / 2,
        (H - 22) as i64,
        xs,
        1,
        INK,
        false,
    );
    c.text(
        14,
        TOP as i64 + (ph as i64 + Canvas::text_width(ys, 1)) / 2,
        ys,
        1,
        INK,
        true,
    );
    let title = format!("ROSGUARD TUNE: {} SETTINGS, {} POLLS", dots.len(), s.polls);
    c.text(LEFT as i64, 12, &title, 2, INK, false);
    // Legend.
    let mut lx = LEFT as i64;
    for (label, colour) in [
        ("OTHER", OTHER),
        ("FRONTIER", FRONTIER),
        ("SUGGESTED", SUGGESTED),
    ] {
        c.dot(lx + 4, 38, 4, colour);
        c.text(lx + 12, 35, label, 1, INK, false);
        lx += 24 + Canvas::text_width(label, 1);
    }
    c.ring(lx + 4, 38, 6, INK);
    c.text(lx + 14, 35, "CURRENT", 1, INK, false);
    let skipped = s.not_answered;
    if skipped > 0 {
        let note = format!("{skipped} NOT ANSWERED");
        c.text(
            (W - RIGHT) as i64 - Canvas::text_width(&note, 1),
            35,
            &note,
            1,
            NOT_ANSWERED,
            false,
        );
    }
    // Dots: the others first, the frontier over them, the suggestion on top; settings at the
    // same spot are spread a little so each shows.
    let mut seen = std::collections::BTreeMap::<(i64, i64), i64>::new();
    let mut placed = Vec::new();
    for d in dots {
        let (x, y) = (d.x, d.y);
        let (px, py) = at(x, y);
        let k = seen.entry((px, py)).or_insert(0);
        let offset = (*k % 5 - 2) * 2;
        *k += 1;
        placed.push((d, px + offset, py));
    }
    // How many settings share each spot.
    for (&(x, y), &n) in &seen {
        if n > 1 {
            let label = format!("X{n}");
            let lx = (x + 10).min(W as i64 - 2 - Canvas::text_width(&label, 1));
            c.text(lx, y - 14, &label, 1, OTHER, false);
        }
    }
    for layer in 0..3 {
        for &(d, x, y) in &placed {
            match (layer, d.suggested, d.frontier) {
                (0, false, false) => c.dot(x, y, 3, OTHER),
                (1, false, true) => c.dot(x, y, 4, FRONTIER),
                (2, true, _) => c.dot(x, y, 6, SUGGESTED),
                _ => {}
            }
            if layer == 2 && d.current {
                c.ring(x, y, 9, INK);
            }
        }
    }
    c.png()
}

/// The 5x7 font: seven rows of five bits, the high bit leftmost. Lowercase is drawn as
/// uppercase; anything else unknown as a box.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        ' ' => [0; 7],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '"' => [0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_png_s() {
        // The IEND chunk's well-known CRC, and the standard check value.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(step(3.0), 1.0);
        assert_eq!(step(12.0), 5.0);
        assert_eq!(step(40.0), 10.0);
        assert_eq!(step(130.0), 50.0);
    }
}
