//! Search at scale, for scripts/bench-search.sh: makes big databases of generated window
//! embeddings, and compares ways to rank them on the same data.
//!
//!   bench_search gen --db FILE --windows N [--dim 512] [--seed 1]
//!   bench_search index --db FILE           (build the search index of an existing one)
//!   bench_search backfill --db FILE [--labels 20]   (rescore every window: windows/s)
//!   bench_search compare --windows N [--dim 512] [--queries 200] [--seed 1]
//!   bench_search process --db FILE [--bin target/release/cliptag] [--queries 20]
//!                [--exact-queries 20] [--candidates default,1000,2000]
//!                (`cliptag search --like` as a whole process)
//!
//! The data: unit vectors with the structure of CLIP window embeddings on an edge box —
//! a direction every window shares (CLIP's image embeddings all lie in a narrow cone),
//! 16 cameras with 64 recurring scenes each, and per-window noise; queries lie near a
//! scene, as a text or a photo of something seen does. Random numbers are fine for speed;
//! recall is measured against the exact scan of the same vectors.
//!
//! `gen` writes a real cliptag database (the crate's own schema and migrations) with one
//! model, 16 sources of 10 s windows and no matches, in transactions of 10 000 windows.
//! `compare` holds everything in memory and times, per query (one thread):
//! - `exact`: the f32 dot product with every window (what `cliptag search` does now,
//!   less the reading from SQLite);
//! - `int8`: one byte per dimension and a scale per window, exact rescoring of the best 100;
//! - `bits+rescore R`: one sign bit per dimension of the window minus the data's mean
//!   (64 B at 512 dims), Hamming distance to the query's bits, the best R rescored exactly;
//! - `bits-asym+rescore R`: the same bits scored against the f32 query (a table per byte),
//!   the best R rescored exactly.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use rusqlite::params;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: plenty for test data, and no dependency.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    fn gaussian(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.normal()).collect()
    }
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn mix(parts: &[(f32, &[f32])]) -> Vec<f32> {
    let mut out = vec![0.0; parts[0].1.len()];
    for (w, v) in parts {
        out.iter_mut().zip(*v).for_each(|(o, x)| *o += w * x);
    }
    normalized(out)
}

const SOURCES: usize = 16;
const SCENES: usize = 64;

struct World {
    common: Vec<f32>,
    scenes: Vec<Vec<f32>>,
}

impl World {
    fn new(rng: &mut Rng, dim: usize) -> World {
        World {
            common: normalized(rng.gaussian(dim)),
            scenes: (0..SOURCES * SCENES)
                .map(|_| normalized(rng.gaussian(dim)))
                .collect(),
        }
    }

    /// Window `i`: its camera's scene of the moment, plus noise.
    fn window(&self, rng: &mut Rng, i: usize) -> Vec<f32> {
        let source = i % SOURCES;
        let scene = source * SCENES + (rng.next() as usize % SCENES);
        let noise = normalized(rng.gaussian(self.common.len()));
        mix(&[
            (0.75, &self.common),
            (0.55, &self.scenes[scene]),
            (0.35, &noise),
        ])
    }

    /// A query near some scene, less like it than its own windows are.
    fn query(&self, rng: &mut Rng) -> Vec<f32> {
        let scene = rng.next() as usize % self.scenes.len();
        let noise = normalized(rng.gaussian(self.common.len()));
        mix(&[
            (0.5, &self.common),
            (0.5, &self.scenes[scene]),
            (0.6, &noise),
        ])
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: Option<T>) -> Result<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} wants a value")),
        None => default.with_context(|| format!("{name} is required")),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("index") {
        return index(&arg::<String>(&args, "--db", None)?);
    }
    if args.first().map(String::as_str) == Some("process") {
        return process(
            &arg::<String>(&args, "--db", None)?,
            &arg::<String>(&args, "--bin", Some("target/release/cliptag".into()))?,
            arg(&args, "--queries", Some(20))?,
            arg(&args, "--exact-queries", Some(20))?,
            &arg::<String>(&args, "--candidates", Some("default".into()))?
                .split(',')
                .map(|c| match c {
                    "default" => Ok(None),
                    c => c
                        .parse()
                        .map(Some)
                        .context("--candidates wants numbers or `default`, e.g. 1000,default"),
                })
                .collect::<Result<Vec<Option<usize>>>>()?,
        );
    }
    if args.first().map(String::as_str) == Some("backfill") {
        return backfill(
            &arg::<String>(&args, "--db", None)?,
            arg(&args, "--labels", Some(20))?,
        );
    }
    let windows: usize = arg(&args, "--windows", None)?;
    let dim: usize = arg(&args, "--dim", Some(512))?;
    let seed: u64 = arg(&args, "--seed", Some(1))?;
    match args.first().map(String::as_str) {
        Some("gen") => generate(&arg::<String>(&args, "--db", None)?, windows, dim, seed),
        Some("compare") => compare(windows, dim, arg(&args, "--queries", Some(200))?, seed),
        _ => bail!("usage: bench_search gen --db FILE --windows N | compare --windows N"),
    }
}

fn generate(db: &str, windows: usize, dim: usize, seed: u64) -> Result<()> {
    let started = Instant::now();
    drop(cliptag::store::Store::open(std::path::Path::new(db))?);
    let mut conn = rusqlite::Connection::open(db)?;
    let mut rng = Rng(seed.max(1));
    let world = World::new(&mut rng, dim);
    let model = format!("bench-{dim}");
    conn.execute(
        "INSERT OR IGNORE INTO models (id, path, embedding_dim, first_seen) VALUES (?1, '/nonexistent', ?2, 0)",
        params![model, dim as i64],
    )?;
    for s in 0..SOURCES {
        conn.execute(
            "INSERT OR IGNORE INTO sources (name, uri, kind) VALUES (?1, ?2, 'live')",
            params![format!("cam{s:02}"), format!("rtsp://cam{s:02}/stream")],
        )?;
    }
    let source_ids: Vec<i64> = (0..SOURCES)
        .map(|s| {
            conn.query_row(
                "SELECT id FROM sources WHERE name = ?1",
                [format!("cam{s:02}")],
                |r| r.get(0),
            )
        })
        .collect::<Result<_, _>>()?;
    let t0 = 1.7e9;
    for chunk in (0..windows).collect::<Vec<_>>().chunks(10_000) {
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO segments (source_id, model_id, start_ms, end_ms, processed_at, \
                 frame_count, keyframes_ms, clip_calls, embedding, wall_start, wall_end) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 10, '[]', 1, ?6, ?7, ?8)",
            )?;
            for &i in chunk {
                let v = world.window(&mut rng, i);
                let slot = (i / SOURCES) as i64;
                let start = t0 + slot as f64 * 10.0;
                st.execute(params![
                    source_ids[i % SOURCES],
                    model,
                    slot * 10_000,
                    slot * 10_000 + 10_000,
                    start + 10.0,
                    cliptag::store::f32s_to_blob(&v),
                    start,
                    start + 10.0
                ])?;
            }
        }
        tx.commit()?;
    }
    println!(
        "{db}: {windows} windows of {dim} dims inserted in {:.1} s ({} bytes)",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(db)?.len(),
    );
    drop(conn);
    index(db)
}

/// The writer builds the search index when it starts on a database without one.
fn index(db: &str) -> Result<()> {
    let started = Instant::now();
    let db = std::path::Path::new(db);
    cliptag::store::StoreWriter::spawn(db)?.close()?;
    let codes = std::fs::metadata(cliptag::store::codes::codes_path(db))?.len();
    let windows = cliptag::store::Store::open_existing(db)?.segment_count()?;
    println!(
        "{}: search index built in {:.1} s: {codes} bytes, {:.0} per window",
        db.display(),
        started.elapsed().as_secs_f64(),
        codes as f64 / windows.max(1) as f64
    );
    Ok(())
}

/// One `cliptag search --like ID --json` run: its wall time, peak RSS and the ids found.
fn run_search(
    bin: &str,
    db: &str,
    id: i64,
    extra: &[&str],
    candidates: Option<usize>,
) -> Result<(f64, u64, Vec<i64>)> {
    let times = std::env::temp_dir().join(format!("bench-search-time-{}", std::process::id()));
    let mut command = std::process::Command::new("/usr/bin/time");
    if let Some(c) = candidates {
        command.env("CLIPTAG_SEARCH_CANDIDATES", c.to_string());
    }
    let out = command
        .args(["-f", "%e %M", "-o"])
        .arg(&times)
        .args([bin, "search", "--db", db, "--like", &id.to_string()])
        .args(["--limit", "10", "--json"])
        .args(extra)
        .output()
        .context("running /usr/bin/time (apt-get install time)")?;
    if !out.status.success() {
        bail!(
            "cliptag search failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let measured = std::fs::read_to_string(&times)?;
    let mut fields = measured.split_whitespace();
    let wall: f64 = fields.next().context("time's wall")?.parse()?;
    let rss_kb: u64 = fields.next().context("time's RSS")?.parse()?;
    let ids = String::from_utf8(out.stdout)?
        .lines()
        .map(|line| -> Result<i64> {
            let v: serde_json::Value = serde_json::from_str(line)?;
            v["segment_id"].as_i64().context("a hit without segment_id")
        })
        .collect::<Result<_>>()?;
    Ok((wall, rss_kb, ids))
}

/// Drops the page cache (root only), so the next run reads from the disk.
fn drop_page_cache() -> bool {
    std::process::Command::new("sync").status().is_ok()
        && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// `cliptag search --like` as a whole process over `queries` windows spread over the
/// database, for each count of rescored candidates (`CLIPTAG_SEARCH_CANDIDATES`): p50/p99
/// wall with the page cache warm (each query run once before), then cold (the page cache
/// dropped before each run, when root), peak RSS, and recall@10 of the index against
/// `--exact` over the first `exact_queries` (the exact answers are found once).
fn process(
    db: &str,
    bin: &str,
    queries: usize,
    exact_queries: usize,
    candidates: &[Option<usize>],
) -> Result<()> {
    let n = cliptag::store::Store::open_existing(std::path::Path::new(db))?.segment_count()?;
    let ids: Vec<i64> = (0..queries as u64)
        .map(|q| (1 + q * n / queries as u64 + 7 * q) as i64)
        .collect();
    let pct = |mut v: Vec<f64>, p: usize| {
        v.sort_by(f64::total_cmp);
        v[(v.len() * p / 100).min(v.len() - 1)] * 1e3
    };
    // The exact answers take minutes each at 10⁷ windows: kept beside the database, for
    // the next run with other settings (delete the file when the database changes).
    let cache_path = format!("{db}-exact-answers");
    let cache: std::collections::HashMap<i64, Vec<i64>> = std::fs::read_to_string(&cache_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut ids = line.split_whitespace().map(|v| v.parse::<i64>().ok());
            Some((ids.next()??, ids.collect::<Option<Vec<i64>>>()?))
        })
        .collect();
    let mut exact = Vec::new();
    for &id in ids.iter().take(exact_queries) {
        let found = match cache.get(&id) {
            Some(found) => found.clone(),
            None => {
                let (_, _, found) = run_search(bin, db, id, &["--exact"], None)?;
                let line: Vec<String> = std::iter::once(id)
                    .chain(found.iter().copied())
                    .map(|v| v.to_string())
                    .collect();
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&cache_path)?;
                std::io::Write::write_all(&mut f, format!("{}\n", line.join(" ")).as_bytes())?;
                found
            }
        };
        exact.push(found);
    }
    for &c in candidates {
        let mut warm = Vec::new();
        let mut rss = 0;
        let mut found = Vec::new();
        for &id in &ids {
            run_search(bin, db, id, &[], c)?;
            let (wall, kb, got) = run_search(bin, db, id, &[], c)?;
            warm.push(wall);
            rss = rss.max(kb);
            found.push(got);
        }
        let mut cold = Vec::new();
        for &id in &ids {
            if !drop_page_cache() {
                break;
            }
            cold.push(run_search(bin, db, id, &[], c)?.0);
        }
        let (mut hits, mut asked) = (0, 0);
        for (got, want) in found.iter().zip(&exact) {
            hits += got.iter().filter(|i| want.contains(i)).count();
            asked += want.len();
        }
        let cold = if cold.len() == ids.len() {
            format!("{:.0} | {:.0}", pct(cold.clone(), 50), pct(cold, 99))
        } else {
            "- | -".into()
        };
        let c = c.map_or("default".to_string(), |c| c.to_string());
        println!(
            "| {n} | {c} | {:.0} | {:.0} | {cold} | {:.3} ({} queries) | {} |",
            pct(warm.clone(), 50),
            pct(warm, 99),
            hits as f64 / asked.max(1) as f64,
            exact.len(),
            rss / 1024
        );
    }
    Ok(())
}

/// A label set of `n` labels (random directions near the data, as text embeddings are
/// near image ones only loosely) made the model's, then every window rescored with it
/// through the daemon's own backfill, timed to the last commit.
fn backfill(db: &str, n: usize) -> Result<()> {
    use cliptag::classify::{Label, LabelSet};
    use cliptag::store::{LabelRecord, Store, StoreWriter};
    let path = std::path::Path::new(db);
    let store = Store::open_existing(path)?;
    let (model, _) = store
        .models_with_windows()?
        .pop()
        .context("the database has no windows")?;
    let dim = store
        .models()?
        .iter()
        .find(|m| m.id == model)
        .map(|m| m.embedding_dim)
        .unwrap_or(512);
    let mut rng = Rng(7);
    let labels: Vec<Label> = (0..n)
        .map(|i| Label {
            text: format!("label {i}"),
            prompts: vec![format!("a photo of label {i}")],
        })
        .collect();
    let embeddings: Vec<Vec<f32>> = (0..n).map(|_| normalized(rng.gaussian(dim))).collect();
    let writer = StoreWriter::spawn(path)?;
    writer.set_labels(
        &model,
        labels
            .iter()
            .zip(&embeddings)
            .map(|(l, e)| LabelRecord {
                text: l.text.clone(),
                prompts: l.prompts.clone(),
                embedding: e.clone(),
            })
            .collect(),
    )?;
    writer.flush()?;
    let set = LabelSet {
        labels,
        embeddings,
        head: None,
    };
    let started = Instant::now();
    let report = cliptag::daemon::backfill::backfill(
        &store,
        &writer,
        &model,
        &set,
        &cliptag::classify::ClassifyConfig::default(),
        &std::sync::atomic::AtomicBool::new(false),
    )?;
    writer.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "backfill of {} windows with {n} labels: {seconds:.1} s, {:.0} windows/s (committed)",
        report.windows,
        report.windows as f64 / seconds
    );
    writer.close()?;
    Ok(())
}

fn compare(windows: usize, dim: usize, queries: usize, seed: u64) -> Result<()> {
    let mut rng = Rng(seed.max(1));
    let world = World::new(&mut rng, dim);
    let data: Vec<f32> = (0..windows)
        .flat_map(|i| world.window(&mut rng, i))
        .collect();
    let qs: Vec<Vec<f32>> = (0..queries).map(|_| world.query(&mut rng)).collect();
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let k = 10;

    // The exact answers, which recall is measured against.
    let exact = |q: &[f32]| -> Vec<usize> {
        let mut scored: Vec<(f32, usize)> = (0..windows).map(|i| (dot(q, row(i)), i)).collect();
        scored.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
        let mut top: Vec<(f32, usize)> = scored[..k].to_vec();
        top.sort_by(|a, b| b.0.total_cmp(&a.0));
        top.into_iter().map(|(_, i)| i).collect()
    };
    let rescore = |q: &[f32], candidates: &mut Vec<(f32, usize)>, r: usize| -> Vec<usize> {
        let r = r.min(candidates.len());
        candidates.select_nth_unstable_by(r - 1, |a, b| b.0.total_cmp(&a.0));
        let mut top: Vec<(f32, usize)> = candidates[..r]
            .iter()
            .map(|&(_, i)| (dot(q, row(i)), i))
            .collect();
        top.sort_by(|a, b| b.0.total_cmp(&a.0));
        top.into_iter().take(k).map(|(_, i)| i).collect()
    };

    // int8, a scale per window.
    let int8: Vec<(f32, Vec<i8>)> = (0..windows)
        .map(|i| {
            let v = row(i);
            let m = v.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-12);
            (
                m / 127.0,
                v.iter().map(|x| (x / m * 127.0).round() as i8).collect(),
            )
        })
        .collect();
    // Sign bits of the centred vectors.
    let mut mean = vec![0f32; dim];
    for i in 0..windows {
        mean.iter_mut()
            .zip(row(i))
            .for_each(|(m, x)| *m += x / windows as f32);
    }
    let words = dim.div_ceil(64);
    let bits_of = |v: &[f32]| -> Vec<u64> {
        let mut out = vec![0u64; words];
        for (d, (x, m)) in v.iter().zip(&mean).enumerate() {
            if x - m > 0.0 {
                out[d / 64] |= 1 << (d % 64);
            }
        }
        out
    };
    let codes: Vec<u64> = (0..windows).flat_map(|i| bits_of(row(i))).collect();

    let truth: Vec<Vec<usize>> = qs.iter().map(|q| exact(q)).collect();
    let report = |name: &str, bytes: usize, run: &dyn Fn(&[f32]) -> Vec<usize>| {
        let mut times = Vec::new();
        let mut hits = 0;
        for (q, want) in qs.iter().zip(&truth) {
            let t = Instant::now();
            let got = run(q);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            hits += got.iter().filter(|i| want.contains(i)).count();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {windows} | {name} | {bytes} | {:.2} | {:.2} | {:.3} |",
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            hits as f64 / (k * qs.len()) as f64
        );
    };
    println!("| windows | method | bytes/window | p50 ms | p99 ms | recall@10 |");
    println!("|---|---|---|---|---|---|");
    report("exact f32", dim * 4, &|q| exact(q));
    report("int8 + rescore 100", dim + 4, &|q| {
        let qi: Vec<f32> = q.to_vec();
        let mut c: Vec<(f32, usize)> = int8
            .iter()
            .enumerate()
            .map(|(i, (s, v))| {
                (
                    s * v.iter().zip(&qi).map(|(a, b)| *a as f32 * b).sum::<f32>(),
                    i,
                )
            })
            .collect();
        rescore(q, &mut c, 100)
    });
    for r in [100, 400, 1000] {
        report(&format!("bits + rescore {r}"), words * 8, &|q| {
            let qb = bits_of(q);
            let mut c: Vec<(f32, usize)> = codes
                .chunks_exact(words)
                .enumerate()
                .map(|(i, w)| {
                    let d: u32 = w.iter().zip(&qb).map(|(a, b)| (a ^ b).count_ones()).sum();
                    (-(d as f32), i)
                })
                .collect();
            rescore(q, &mut c, r)
        });
    }
    for r in [100, 400] {
        report(&format!("bits-asym + rescore {r}"), words * 8, &|q| {
            // One table per byte of code: the query's centred values summed over the set bits.
            let centred: Vec<f32> = q.iter().zip(&mean).map(|(x, m)| x - m).collect();
            let tables: Vec<[f32; 256]> = centred
                .chunks(8)
                .map(|chunk| {
                    let mut t = [0f32; 256];
                    for (byte, slot) in t.iter_mut().enumerate() {
                        *slot = chunk
                            .iter()
                            .enumerate()
                            .map(|(b, x)| if byte >> b & 1 == 1 { *x } else { -*x })
                            .sum();
                    }
                    t
                })
                .collect();
            let mut c: Vec<(f32, usize)> = codes
                .chunks_exact(words)
                .enumerate()
                .map(|(i, w)| {
                    let mut s = 0f32;
                    for (wi, word) in w.iter().enumerate() {
                        for b in 0..8 {
                            s += tables[wi * 8 + b][(word >> (8 * b) & 0xff) as usize];
                        }
                    }
                    (s, i)
                })
                .collect();
            rescore(q, &mut c, r)
        });
    }
    Ok(())
}
