//! Tests of writing, opening, querying, corrupting and merging whole blocks, each checked
//! against a model: a map from label set to sorted samples.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::chunkenc::XorAppender;
use crate::compact::{merge_blocks, merge_blocks_with};
use crate::index::{HEADER_LEN as INDEX_HEADER_LEN, SECTION_LEN_LEN, TOC_LEN, Toc};
use crate::matcher::MatchOp;
use crate::postings::tests::{arb_matcher, brute_force};

type Model = BTreeMap<Labels, Vec<Sample>>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

/// Encodes sorted samples into chunks of at most `per_chunk`.
fn encode(samples: &[Sample], per_chunk: usize) -> Vec<(i64, i64, u16, Vec<u8>)> {
    samples
        .chunks(per_chunk)
        .map(|c| {
            let mut a = XorAppender::new();
            for s in c {
                a.append(s.t, s.v);
            }
            (c[0].t, c[c.len() - 1].t, c.len() as u16, a.into_bytes())
        })
        .collect()
}

fn write_block_with(
    blocks: &Path,
    range: (i64, i64),
    model: &Model,
    per_chunk: usize,
    setup: impl FnOnce(&mut BlockWriter),
) -> BlockMeta {
    let mut w = BlockWriter::new(blocks, range.0, range.1).unwrap();
    setup(&mut w);
    for (l, samples) in model {
        let enc = encode(samples, per_chunk);
        let chunks: Vec<ChunkInput<'_>> = enc
            .iter()
            .map(|(a, b, n, d)| (*a, *b, Encoding::Xor.as_u8(), *n, d.as_slice()))
            .collect();
        w.add_series(l, &chunks).unwrap();
    }
    w.finish(1, Vec::new()).unwrap()
}

fn write_block(blocks: &Path, range: (i64, i64), model: &Model, per_chunk: usize) -> BlockMeta {
    write_block_with(blocks, range, model, per_chunk, |_| {})
}

/// What `select` must return according to the model.
fn model_select(model: &Model, ms: &[Matcher], mint: i64, maxt: i64) -> Vec<(Labels, Vec<Sample>)> {
    let all: Vec<Labels> = model.keys().cloned().collect();
    brute_force(&all, ms)
        .into_iter()
        .map(|i| {
            let l = &all[i as usize];
            let s: Vec<Sample> = model[l]
                .iter()
                .filter(|s| s.t >= mint && s.t <= maxt)
                .copied()
                .collect();
            (l.clone(), s)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// Samples compared by bit pattern, so NaNs compare too.
fn bits(r: &[(Labels, Vec<Sample>)]) -> Vec<(Labels, Vec<(i64, u64)>)> {
    r.iter()
        .map(|(l, s)| (l.clone(), s.iter().map(|s| (s.t, s.v.to_bits())).collect()))
        .collect()
}

fn select_all(b: &Block) -> Result<Vec<(Labels, Vec<Sample>)>, StorageError> {
    let any = Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap();
    b.select(&[any], i64::MIN, i64::MAX)
}

fn arb_series_labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(
        prop::sample::select(vec!["__name__", "a", "b", "job", "é"]),
        prop::sample::select(vec![
            "x",
            "y",
            "xy",
            "1",
            "ñ",
            "日本",
            "long-value-0123456789",
        ]),
        1..4,
    )
    .prop_map(|m| Labels::from_pairs(m).unwrap())
}

/// Up to `n` series with samples in `[lo, hi]`; values include NaN and the stale marker.
fn arb_model(n: usize, lo: i64, hi: i64) -> impl Strategy<Value = Model> {
    let samples = prop::collection::btree_map(
        lo..=hi,
        prop_oneof![
            8 => (-1000i32..1000).prop_map(|x| f64::from(x) / 4.0),
            1 => Just(f64::NAN),
            1 => Just(f64::from_bits(crate::STALE_NAN_BITS)),
        ],
        1..40,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(t, v)| Sample { t, v })
            .collect::<Vec<_>>()
    });
    prop::collection::btree_map(arb_series_labels(), samples, 0..n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn select_matches_the_model_for_random_matchers(
        model in arb_model(25, -500, 1500),
        per_chunk in 1usize..20,
        queries in prop::collection::vec(
            (prop::collection::vec(arb_matcher(), 0..4), -600i64..1600, 0i64..2500),
            30,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_block(dir.path(), (-500, 1500), &model, per_chunk);
        let b = Block::open(&dir.path().join(&meta.id)).unwrap();
        prop_assert_eq!(meta.num_series, model.len() as u64);
        prop_assert_eq!(meta.num_samples, model.values().map(|s| s.len() as u64).sum::<u64>());
        for (ms, mint, len) in queries {
            let maxt = mint + len;
            let got = b.select(&ms, mint, maxt).unwrap();
            prop_assert_eq!(bits(&got), bits(&model_select(&model, &ms, mint, maxt)), "{:?}", ms);
        }
        b.verify().unwrap();
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn merge_of_overlapping_blocks_equals_the_model(
        models in prop::collection::vec(arb_model(12, 0, 300), 1..4),
        per_chunk in 1usize..15,
        out_chunk in prop::sample::select(vec![1usize, 3, 120]),
        offsets in prop::collection::vec(0i64..200, 3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut expect = Model::new();
        let mut blocks = Vec::new();
        for (k, m) in models.iter().enumerate() {
            // Shift each block so that they overlap partly.
            let off = offsets[k];
            let shifted: Model = m
                .iter()
                .map(|(l, s)| (l.clone(), s.iter().map(|x| Sample { t: x.t + off, v: x.v }).collect()))
                .collect();
            for (l, s) in &shifted {
                // Later blocks win on equal timestamps.
                let e = expect.entry(l.clone()).or_default();
                let mut by_t: BTreeMap<i64, f64> = e.iter().map(|x| (x.t, x.v)).collect();
                by_t.extend(s.iter().map(|x| (x.t, x.v)));
                *e = by_t.into_iter().map(|(t, v)| Sample { t, v }).collect();
            }
            let meta = write_block(dir.path(), (off, 300 + off), &shifted, per_chunk);
            blocks.push(Block::open(&dir.path().join(&meta.id)).unwrap());
        }
        let refs: Vec<&Block> = blocks.iter().collect();
        let meta = merge_blocks_with(dir.path(), &refs, out_chunk).unwrap();
        let merged = Block::open(&dir.path().join(&meta.id)).unwrap();
        merged.verify().unwrap();
        let any = [Matcher::new(MatchOp::NotEqual, "zzz", "q").unwrap()];
        let got = merged.select(&any, i64::MIN, i64::MAX).unwrap();
        prop_assert_eq!(bits(&got), bits(&model_select(&expect, &any, i64::MIN, i64::MAX)));
        prop_assert_eq!(meta.level, 2);
        let mut sources: Vec<String> = blocks.iter().map(|b| b.meta().id.clone()).collect();
        sources.sort();
        prop_assert_eq!(&meta.sources, &sources);
        // The merged block spans the data of its inputs (their windows, if none has data).
        let with_data: Vec<&Block> = blocks.iter().filter(|b| b.meta().num_chunks > 0).collect();
        let spanned = if with_data.is_empty() { blocks.iter().collect() } else { with_data };
        prop_assert_eq!(meta.min_time, spanned.iter().map(|b| b.meta().min_time).min().unwrap());
        prop_assert_eq!(meta.max_time, spanned.iter().map(|b| b.meta().max_time).max().unwrap());
    }
}

#[test]
fn unicode_and_long_labels_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let long = "ü".repeat(70_000);
    let mut model = Model::new();
    let l1 = labels(&[
        ("__name__", "température"),
        ("région", "東京"),
        ("v", &long),
    ]);
    let l2 = labels(&[("__name__", "température"), ("région", "Zürich 🌡")]);
    model.insert(l1.clone(), vec![Sample { t: 1, v: 1.0 }]);
    model.insert(l2.clone(), vec![Sample { t: 2, v: 2.0 }]);
    let meta = write_block(dir.path(), (0, 10), &model, 120);
    let b = Block::open(&dir.path().join(&meta.id)).unwrap();
    let idx = b.index();
    assert_eq!(idx.label_names().unwrap(), vec!["__name__", "région", "v"]);
    assert_eq!(
        idx.label_values("région").unwrap(),
        vec!["Zürich 🌡", "東京"]
    );
    let refs = idx.postings("v", &long).unwrap();
    assert_eq!(refs.len(), 1);
    let (got, chunks) = b.series(refs[0]).unwrap();
    assert_eq!(got, l1);
    assert_eq!(got.get("v").map(str::len), Some(long.len()));
    assert_eq!(chunks.len(), 1);
    let sel = b.select(&[Matcher::eq("région", "東京")], 0, 10).unwrap();
    assert_eq!(sel, vec![(l1, vec![Sample { t: 1, v: 1.0 }])]);
    assert!(idx.postings("région", "nowhere").unwrap().is_empty());
    assert!(idx.postings("nowhere", "東京").unwrap().is_empty());
}

#[test]
fn many_symbols_and_segments_are_found() {
    // More symbols than one in-memory sample step, several chunk segments.
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for i in 0..300 {
        let samples = (0..30)
            .map(|t| Sample {
                t: t * 10,
                v: f64::from(i),
            })
            .collect();
        model.insert(
            labels(&[("__name__", "m"), ("id", &format!("{i:04}"))]),
            samples,
        );
    }
    let meta = write_block_with(dir.path(), (0, 1000), &model, 7, |w| {
        w.set_max_segment_size(4096)
    });
    let b = Block::open(&dir.path().join(&meta.id)).unwrap();
    assert!(fs::read_dir(b.dir().join(CHUNKS_DIR)).unwrap().count() > 3);
    for (i, l) in model.keys().enumerate().step_by(7) {
        let v = l.get("id").unwrap();
        let got = b.select(&[Matcher::eq("id", v)], 0, 1000).unwrap();
        assert_eq!(got.len(), 1, "{i}");
        assert_eq!(got[0].1, model[l]);
    }
    assert_eq!(b.index().label_values("id").unwrap().len(), 300);
    assert!(b.index().postings("id", "0300").unwrap().is_empty());
    assert!(b.index().postings("id", "").unwrap().is_empty());
    assert!(b.index().postings("id", "zzzz").unwrap().is_empty());
    b.verify().unwrap();
}

#[test]
fn empty_block_opens_and_selects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let meta = BlockWriter::new(dir.path(), 0, 99)
        .unwrap()
        .finish(1, Vec::new())
        .unwrap();
    assert_eq!(meta.sources, vec![meta.id.clone()]);
    let b = Block::open(&dir.path().join(&meta.id)).unwrap();
    assert!(select_all(&b).unwrap().is_empty());
    assert!(b.index().label_names().unwrap().is_empty());
    assert!(b.index().all_postings().unwrap().is_empty());
    b.verify().unwrap();
}

#[test]
fn a_block_spans_its_data_not_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    model.insert(
        labels(&[("__name__", "a")]),
        vec![Sample { t: 120, v: 1.0 }, Sample { t: 130, v: 2.0 }],
    );
    model.insert(
        labels(&[("__name__", "b")]),
        vec![Sample { t: 110, v: 1.0 }],
    );
    let meta = write_block(dir.path(), (0, 999), &model, 120);
    assert_eq!((meta.min_time, meta.max_time), (110, 130));
    let b = Block::open(&dir.path().join(&meta.id)).unwrap();
    assert_eq!((b.meta().min_time, b.meta().max_time), (110, 130));
    // A query after the data skips the block; one that touches it reads it.
    let any = [Matcher::new(MatchOp::NotEqual, "zzz", "q").unwrap()];
    assert!(b.select_chunks(&any, 131, 999).unwrap().is_empty());
    assert_eq!(b.select_chunks(&any, 130, 999).unwrap().len(), 1);
    // Without data, the window.
    let empty = BlockWriter::new(dir.path(), 0, 99)
        .unwrap()
        .finish(1, Vec::new())
        .unwrap();
    assert_eq!((empty.min_time, empty.max_time), (0, 99));
}

#[test]
fn block_reopens_after_the_writer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    model.insert(labels(&[("__name__", "up")]), vec![Sample { t: 5, v: 1.0 }]);
    let id = write_block(dir.path(), (0, 9), &model, 120).id;
    // Nothing of the writer survives but the directory.
    let b = Block::open(&dir.path().join(&id)).unwrap();
    assert_eq!(
        bits(&select_all(&b).unwrap()),
        bits(&model_select(
            &model,
            &[Matcher::eq("__name__", "up")],
            0,
            9
        ))
    );
    assert_eq!(b.meta().id, id);
    assert!(b.size_bytes() > 0);
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![id]);
}

fn dir_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn writer_leaves_no_tmp_dir_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = XorAppender::new();
    a.append(1, 1.0);
    let chunk = [(1, 1, Encoding::Xor.as_u8(), 1, a.bytes())];

    // Out-of-order series, a chunk outside the range, a bad encoding: errors, then drop.
    let mut w = BlockWriter::new(dir.path(), 0, 10).unwrap();
    w.add_series(&labels(&[("a", "2")]), &chunk).unwrap();
    let e = w.add_series(&labels(&[("a", "1")]), &chunk).unwrap_err();
    assert!(matches!(e, StorageError::InvalidInput(_)), "{e}");
    let late = [(11, 11, Encoding::Xor.as_u8(), 1, a.bytes())];
    assert!(w.add_series(&labels(&[("a", "3")]), &late).is_err());
    let bad_enc = [(1, 1, 0, 1, a.bytes())];
    assert!(w.add_series(&labels(&[("a", "3")]), &bad_enc).is_err());
    let wrong_count = [(1, 1, Encoding::Xor.as_u8(), 2, a.bytes())];
    assert!(w.add_series(&labels(&[("a", "3")]), &wrong_count).is_err());
    assert_eq!(dir_names(dir.path()).len(), 1);
    drop(w);
    assert!(dir_names(dir.path()).is_empty());

    // finish fails: the final directory name is taken.
    let w = BlockWriter::new(dir.path(), 0, 10).unwrap();
    fs::create_dir_all(dir.path().join(w.id()).join("squatter")).unwrap();
    let id = w.id().to_string();
    assert!(w.finish(1, Vec::new()).is_err());
    assert_eq!(dir_names(dir.path()), vec![id]);

    // An invalid range fails before creating anything.
    assert!(BlockWriter::new(&dir.path().join("x"), 5, 4).is_err());
    assert!(!dir.path().join("x").exists());
}

#[test]
fn leftover_tmp_dirs_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let w = BlockWriter::new(dir.path(), 0, 10).unwrap();
    let tmp = dir.path().join(format!("{}{TMP_SUFFIX}", w.id()));
    std::mem::forget(w); // as if the process died
    assert!(tmp.exists());
    fs::create_dir(dir.path().join("keep.tmp")).unwrap();
    assert_eq!(remove_tmp_dirs(dir.path()).unwrap(), 1);
    assert_eq!(dir_names(dir.path()), vec!["keep.tmp".to_string()]);
}

/// A small block with several series, chunks and label values, and its model.
fn corruption_fixture() -> (tempfile::TempDir, PathBuf, Model) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for (i, job) in ["api", "db", "web"].iter().enumerate() {
        for inst in ["a:1", "b:2"] {
            let s = (0..12)
                .map(|t| Sample {
                    t: t * 10 + i as i64,
                    v: t as f64,
                })
                .collect();
            model.insert(
                labels(&[("__name__", "up"), ("job", job), ("instance", inst)]),
                s,
            );
        }
    }
    let meta = write_block(dir.path(), (0, 200), &model, 5);
    let p = dir.path().join(&meta.id);
    (dir, p, model)
}

/// Every way of reading the block: it must either fail with `Corrupt` naming a path
/// containing `culprit`, or return exactly the model's answers.
fn read_everything(b: &Block, model: &Model, culprit: &str) -> Result<(), StorageError> {
    let check = |r: Result<(), StorageError>| -> Result<(), StorageError> {
        if let Err(e) = &r {
            assert!(e.is_corruption(), "not a corruption error: {e}");
            assert!(e.path().unwrap().to_string_lossy().contains(culprit), "{e}");
        }
        r
    };
    let queries: Vec<Vec<Matcher>> = vec![
        vec![Matcher::eq("__name__", "up")],
        vec![Matcher::eq("job", "db")],
        vec![Matcher::new(MatchOp::Regex, "instance", "b.*").unwrap()],
        vec![Matcher::new(MatchOp::NotEqual, "job", "api").unwrap()],
        vec![Matcher::eq("job", "")],
    ];
    for ms in queries {
        check(b.select(&ms, i64::MIN, i64::MAX).map(|got| {
            assert_eq!(
                bits(&got),
                bits(&model_select(model, &ms, i64::MIN, i64::MAX)),
                "{ms:?}"
            );
        }))?;
    }
    check(
        b.index()
            .label_names()
            .map(|n| assert_eq!(n, ["__name__", "instance", "job"])),
    )?;
    check(
        b.index()
            .label_values("job")
            .map(|n| assert_eq!(n, ["api", "db", "web"])),
    )?;
    Ok(())
}

/// Offsets of every section boundary of an index file: each section's start, body and
/// CRC, the TOC, and the ends of the header.
fn index_boundaries(b: &[u8]) -> Vec<usize> {
    let toc = Toc::decode(&b[b.len() - TOC_LEN..]).unwrap();
    let mut out = vec![
        0,
        4,
        5,
        INDEX_HEADER_LEN,
        b.len() - TOC_LEN,
        b.len() - 4,
        b.len() - 1,
    ];
    for off in [
        toc.symbols,
        toc.series,
        toc.postings,
        toc.label_values,
        toc.label_names,
    ] {
        let off = off as usize;
        let len = u64::from_le_bytes(b[off..off + 8].try_into().unwrap()) as usize;
        out.extend([
            off,
            off + 4,
            off + SECTION_LEN_LEN,
            off + SECTION_LEN_LEN + len,
        ]);
        out.push(off + SECTION_LEN_LEN + len + 4);
    }
    out.push(toc.all_postings as usize);
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn truncated_index_fails_open_at_every_section_boundary() {
    let (_d, p, _) = corruption_fixture();
    let path = p.join(INDEX_FILE);
    let clean = fs::read(&path).unwrap();
    let cuts = index_boundaries(&clean);
    assert!(cuts.len() > 20);
    for cut in cuts.into_iter().filter(|&c| c < clean.len()) {
        fs::write(&path, &clean[..cut]).unwrap();
        let e = Block::open(&p).unwrap_err();
        assert!(e.is_corruption(), "cut {cut}: {e}");
        assert!(e.to_string().contains("index"), "cut {cut}: {e}");
    }
}

#[test]
fn flipped_byte_anywhere_in_the_index_is_detected() {
    let (_d, p, model) = corruption_fixture();
    let path = p.join(INDEX_FILE);
    let clean = fs::read(&path).unwrap();
    let mut failed_open = 0;
    for i in 0..clean.len() {
        let mut b = clean.clone();
        b[i] ^= 0x24;
        fs::write(&path, &b).unwrap();
        match Block::open(&p) {
            Err(e) => {
                assert!(
                    e.is_corruption() && e.to_string().contains("index"),
                    "byte {i}: {e}"
                );
                failed_open += 1;
            }
            Ok(block) => {
                // Only lazily checked bytes (series and postings) get past open. Reads
                // fail or are right, and a full verification always notices.
                let _ = read_everything(&block, &model, "index");
                let e = block.verify().unwrap_err();
                assert!(
                    e.is_corruption() && e.to_string().contains("index"),
                    "byte {i}: {e}"
                );
            }
        }
    }
    assert!(failed_open > 0 && failed_open < clean.len());
    fs::write(&path, &clean).unwrap();
    read_everything(&Block::open(&p).unwrap(), &model, "index").unwrap();
}

#[test]
fn flipped_byte_in_a_series_entry_fails_the_read_not_the_open() {
    let (_d, p, model) = corruption_fixture();
    let path = p.join(INDEX_FILE);
    let mut b = fs::read(&path).unwrap();
    let toc = Toc::decode(&b[b.len() - TOC_LEN..]).unwrap();
    // The first series entry starts at the first 16-byte boundary of the section body.
    let first = (toc.series as usize + SECTION_LEN_LEN).next_multiple_of(16);
    b[first + 3] ^= 0x01;
    fs::write(&path, &b).unwrap();
    let block = Block::open(&p).unwrap();
    let e = read_everything(&block, &model, "index").unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

#[test]
fn corrupt_chunk_segment_fails_the_read_naming_the_segment() {
    let (_d, p, model) = corruption_fixture();
    let path = p.join(CHUNKS_DIR).join("000001");
    let clean = fs::read(&path).unwrap();
    // Every other byte: each record is longer than two bytes, so each one is hit.
    for i in (0..clean.len()).step_by(2) {
        let mut b = clean.clone();
        b[i] ^= 0x01;
        fs::write(&path, &b).unwrap();
        match Block::open(&p) {
            Err(e) => {
                assert!(i < 8, "byte {i}: {e}");
                assert!(
                    e.is_corruption() && e.to_string().contains("000001"),
                    "byte {i}: {e}"
                );
            }
            Ok(block) => {
                let e = read_everything(&block, &model, "000001").unwrap_err();
                assert!(e.to_string().contains("000001"), "byte {i}: {e}");
            }
        }
    }
    // Truncation anywhere: open fails (header) or some read fails.
    for cut in (0..clean.len()).step_by(5) {
        fs::write(&path, &clean[..cut]).unwrap();
        if let Ok(block) = Block::open(&p) {
            read_everything(&block, &model, "000001").unwrap_err();
        }
    }
}

#[test]
fn flipped_byte_in_meta_json_fails_open_naming_it() {
    let (_d, p, _) = corruption_fixture();
    let path = p.join(META_FILE);
    let clean = fs::read(&path).unwrap();
    for i in 0..clean.len() {
        let mut b = clean.clone();
        b[i] ^= 0x01;
        fs::write(&path, &b).unwrap();
        let e = Block::open(&p).unwrap_err();
        assert!(e.is_corruption(), "byte {i}: {e}");
        assert!(e.to_string().contains("meta.json"), "byte {i}: {e}");
    }
    // Any cut into the document (the trailing newline is not part of it).
    for cut in (0..clean.trim_ascii_end().len()).step_by(3) {
        fs::write(&path, &clean[..cut]).unwrap();
        let e = Block::open(&p).unwrap_err();
        assert!(
            e.is_corruption() && e.to_string().contains("meta.json"),
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn meta_json_from_another_block_is_rejected() {
    let (d, p, model) = corruption_fixture();
    let other = write_block(d.path(), (0, 200), &model, 6);
    fs::copy(d.path().join(&other.id).join(META_FILE), p.join(META_FILE)).unwrap();
    let e = Block::open(&p).unwrap_err();
    assert!(e.to_string().contains("meta.json"), "{e}");
}

#[test]
fn merge_copies_chunks_that_overlap_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let l = labels(&[("__name__", "m")]);
    let old: Model = [(l.clone(), (0..10).map(|t| Sample { t, v: 1.0 }).collect())].into();
    let new: Model = [(l.clone(), (5..20).map(|t| Sample { t, v: 2.0 }).collect())].into();
    let only_new: Model = [(labels(&[("__name__", "n")]), vec![Sample { t: 50, v: 3.0 }])].into();
    let a = write_block(dir.path(), (0, 99), &old, 4);
    let b = write_block(dir.path(), (0, 99), &new, 100);
    let c = write_block(dir.path(), (0, 99), &only_new, 100);
    let blocks: Vec<Block> = [&a, &b, &c]
        .iter()
        .map(|m| Block::open(&dir.path().join(&m.id)).unwrap())
        .collect();
    let refs: Vec<&Block> = blocks.iter().collect();
    let meta = merge_blocks(dir.path(), &refs).unwrap();
    let m = Block::open(&dir.path().join(&meta.id)).unwrap();
    let got = select_all(&m).unwrap();
    // Chunks of `old`: [0,3] [4,7] [8,9]; `new` [5,19] overlaps the last two.
    let want: Vec<Sample> = (0..20)
        .map(|t| Sample {
            t,
            v: if t < 5 { 1.0 } else { 2.0 },
        })
        .collect();
    assert_eq!(got[0], (l.clone(), want));
    assert_eq!(got[1].1, vec![Sample { t: 50, v: 3.0 }]);
    let r = m.index().postings("__name__", "m").unwrap()[0];
    let (_, chunks) = m.series(r).unwrap();
    assert_eq!(
        chunks
            .iter()
            .map(|c| (c.min_time, c.max_time))
            .collect::<Vec<_>>(),
        vec![(0, 3), (4, 19)]
    );
    // The first chunk is the old block's bytes, unchanged.
    let r_old = blocks[0].index().all_postings().unwrap()[0];
    let (_, old_chunks) = blocks[0].series(r_old).unwrap();
    assert_eq!(
        m.chunk(chunks[0].chunk_ref).unwrap(),
        blocks[0].chunk(old_chunks[0].chunk_ref).unwrap()
    );
    assert_eq!(
        (meta.num_series, meta.num_chunks, meta.num_samples),
        (2, 3, 21)
    );
    m.verify().unwrap();
}

#[test]
fn merge_rejects_no_inputs_and_reports_corrupt_inputs() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        merge_blocks(dir.path(), &[]),
        Err(StorageError::InvalidInput(_))
    ));
    let (_d, p, _) = corruption_fixture();
    let seg = p.join(CHUNKS_DIR).join("000001");
    let mut b = fs::read(&seg).unwrap();
    let n = b.len();
    b[n - 1] ^= 0xff;
    fs::write(&seg, &b).unwrap();
    let block = Block::open(&p).unwrap();
    let other = tempfile::tempdir().unwrap();
    // The block overlaps itself, so every chunk is decoded; the corrupt one fails.
    let e = merge_blocks(other.path(), &[&block, &block]).unwrap_err();
    assert!(
        e.is_corruption() && e.path().unwrap().starts_with(&p),
        "{e}"
    );
    assert!(
        dir_names(other.path()).is_empty(),
        "no block and no tmp dir left"
    );
}

/// Bytes per sample of a merged block for several output chunk sizes, on series that
/// look like real ones. Run with `--ignored --nocapture` to print; the numbers are quoted
/// at `MERGED_CHUNK_SAMPLES`.
#[test]
#[ignore]
fn chunk_size_bytes_per_sample() {
    for jitter in [false, true] {
        measure_chunk_sizes(jitter);
    }
}

fn measure_chunk_sizes(jitter: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Two blocks with alternating scrapes of the same series, so merging re-encodes all.
    let mut a = Model::new();
    let mut b = Model::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // One day at a 15 s interval per series. Timestamps on time, or (with `jitter`) one
    // scrape in five 0-4 ms late. Values, one kind per quarter of the series: constant
    // (`up`), an integer counter, a gauge of page-sized memory amounts, a two-decimal
    // random walk.
    let n = 24 * 240;
    for s in 0..80 {
        let kind = s % 4;
        let (mut counter, mut mem, mut walk) = (0.0, 1e9, 50.0);
        let mut samples = Vec::with_capacity(n);
        for i in 0..n as i64 {
            let late = if jitter && rnd() % 5 == 0 {
                (rnd() % 5) as i64
            } else {
                0
            };
            let t = i * 15_000 + late;
            let v = match kind {
                0 => 1.0,
                1 => {
                    counter += (rnd() % 6) as f64;
                    counter
                }
                2 => {
                    mem += 4096.0 * ((rnd() % 9) as f64 - 4.0);
                    mem
                }
                _ => {
                    walk += ((rnd() % 200) as f64 - 100.0) / 100.0;
                    (walk * 100.0_f64).round() / 100.0
                }
            };
            samples.push(Sample { t, v });
        }
        let l = labels(&[
            ("__name__", &format!("metric_{kind}")),
            ("instance", &format!("host-{s}:9100")),
        ]);
        a.insert(l.clone(), samples.iter().step_by(2).copied().collect());
        b.insert(l, samples.iter().skip(1).step_by(2).copied().collect());
    }
    let range = (0, n as i64 * 15_000);
    let ba = Block::open(&dir.path().join(write_block(dir.path(), range, &a, 120).id)).unwrap();
    let bb = Block::open(&dir.path().join(write_block(dir.path(), range, &b, 120).id)).unwrap();
    println!("timestamps jittered: {jitter}");
    println!("samples/chunk | whole block | chunk data: const counter memory walk");
    for size in [120, 480, 1000] {
        let out = tempfile::tempdir().unwrap();
        let meta = merge_blocks_with(out.path(), &[&ba, &bb], size).unwrap();
        let m = Block::open(&out.path().join(&meta.id)).unwrap();
        let mut per_kind = String::new();
        for kind in 0..4 {
            let (mut bytes, mut samples) = (0, 0);
            for r in m
                .index()
                .postings("__name__", &format!("metric_{kind}"))
                .unwrap()
            {
                for c in m.series(r).unwrap().1 {
                    bytes += m.chunk(c.chunk_ref).unwrap().1.len();
                    samples += m.samples(&c).unwrap().len();
                }
            }
            per_kind += &format!(" {:.3}", bytes as f64 / samples as f64);
        }
        println!(
            "{size:13} | {:11.3} |{per_kind}",
            m.size_bytes() as f64 / meta.num_samples as f64
        );
    }
}
