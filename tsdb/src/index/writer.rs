//! Writes a block's index file from the block's series, in one pass per section.
//!
//! The series arrive sorted by label set with their chunk metas (the chunks themselves are
//! already in the segment files). Symbols, series and postings are derived here; the large
//! sections (series, postings) are streamed to the file with their length patched in
//! afterwards, the small ones are built in memory first.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use foldhash::{HashMap, HashMapExt};

use super::encoding::{put_u32, put_u64, put_uvarint, put_varint};
use super::{HEADER_LEN, IndexSummary, MAGIC, SECTION_LEN_LEN, SERIES_ALIGN, Toc, VERSION};
use crate::Labels;
use crate::block::ChunkMeta;
use crate::error::StorageError;

/// Writes the index of `series` (sorted by label set, each with its chunk metas sorted by
/// time) to a new file at `path`, fsyncs it, and returns its size in bytes.
pub(crate) fn write_index(
    path: &Path,
    series: &[(Labels, Vec<ChunkMeta>)],
    summary: IndexSummary,
) -> Result<u64, StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(StorageError::io(path))?;
    let mut w = Out {
        path,
        w: BufWriter::with_capacity(1 << 16, file),
        pos: 0,
        crc: 0,
    };

    let mut header = Vec::with_capacity(HEADER_LEN);
    put_u32(&mut header, MAGIC);
    header.extend_from_slice(&[VERSION, 0, 0, 0]);
    w.write(&header)?;

    // Symbols: every label name and value, sorted; a symbol's reference is its position.
    let symbols: Vec<&str> = series
        .iter()
        .flat_map(|(l, _)| l.iter().flat_map(|(n, v)| [n, v]))
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .collect();
    let count = u32::try_from(symbols.len())
        .map_err(|_| StorageError::InvalidInput("more than 2^32 distinct symbols".into()))?;
    let mut sym_ref: HashMap<&str, u32> = HashMap::with_capacity(symbols.len());
    let mut body = Vec::new();
    put_u32(&mut body, count);
    for (i, s) in symbols.iter().enumerate() {
        sym_ref.insert(s, i as u32);
        put_uvarint(&mut body, s.len() as u64);
        body.extend_from_slice(s.as_bytes());
    }
    let symbols_off = w.pos;
    w.small_section(&body)?;

    // Series, each 16-byte aligned; remember each one's reference and its label pairs'
    // postings on the way.
    let series_off = w.pos;
    w.begin_section()?;
    let mut refs = Vec::with_capacity(series.len());
    let mut postings: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
    let mut entry = Vec::new();
    for (labels, chunks) in series {
        let pad = (SERIES_ALIGN - w.pos % SERIES_ALIGN) % SERIES_ALIGN;
        w.write(&[0u8; SERIES_ALIGN as usize][..pad as usize])?;
        let r = w.pos / SERIES_ALIGN;
        refs.push(r);
        entry.clear();
        let mut pairs = Vec::with_capacity(labels.len());
        for (n, v) in labels.iter() {
            pairs.push((sym_ref[n], sym_ref[v]));
        }
        encode_series(&mut entry, &pairs, chunks);
        w.write(&entry)?;
        for p in pairs {
            postings.entry(p).or_default().push(r);
        }
    }
    w.end_section(series_off)?;

    // Postings: the list of all series first, then one list per label pair in pair
    // order; remember where each starts.
    let postings_off = w.pos;
    w.begin_section()?;
    let all_postings_off = w.pos;
    w.write(&encode_postings(&refs))?;
    let mut postings_at: Vec<((u32, u32), u64)> = Vec::with_capacity(postings.len());
    for (pair, list) in &postings {
        postings_at.push((*pair, w.pos));
        w.write(&encode_postings(list))?;
    }
    drop(postings);
    w.end_section(postings_off)?;

    // Label-value tables: one per label name, in name order, each listing the name's
    // values in order with where their postings list starts.
    let label_values_off = w.pos;
    let body_start = label_values_off + SECTION_LEN_LEN as u64;
    let mut body = Vec::new();
    let mut names: Vec<(u32, u64)> = Vec::new();
    let mut i = 0;
    while i < postings_at.len() {
        let name = postings_at[i].0.0;
        let end = i + postings_at[i..].partition_point(|((n, _), _)| *n == name);
        names.push((name, body_start + body.len() as u64));
        put_u32(&mut body, name);
        put_u32(&mut body, (end - i) as u32);
        for &((_, value), off) in &postings_at[i..end] {
            put_u32(&mut body, value);
            put_u64(&mut body, off);
        }
        i = end;
    }
    w.small_section(&body)?;

    // Label names: every name with where its table starts.
    let label_names_off = w.pos;
    let mut body = Vec::new();
    put_u32(&mut body, names.len() as u32);
    for (name, off) in names {
        put_u32(&mut body, name);
        put_u64(&mut body, off);
    }
    w.small_section(&body)?;

    let toc = Toc {
        symbols: symbols_off,
        series: series_off,
        postings: postings_off,
        label_values: label_values_off,
        label_names: label_names_off,
        all_postings: all_postings_off,
        summary,
    };
    w.write(&toc.encode())?;
    w.w.flush().map_err(StorageError::io(path))?;
    w.w.get_ref().sync_all().map_err(StorageError::io(path))?;
    Ok(w.pos)
}

/// Appends a series entry: `len | labels count | (name ref, value ref)* | chunks count |
/// chunk metas | crc32c`, the CRC covering the bytes between `len` and itself.
fn encode_series(out: &mut Vec<u8>, pairs: &[(u32, u32)], chunks: &[ChunkMeta]) {
    let mut body = Vec::with_capacity(16 + pairs.len() * 4 + chunks.len() * 8);
    put_uvarint(&mut body, pairs.len() as u64);
    for &(n, v) in pairs {
        put_uvarint(&mut body, u64::from(n));
        put_uvarint(&mut body, u64::from(v));
    }
    put_uvarint(&mut body, chunks.len() as u64);
    let mut prev: Option<&ChunkMeta> = None;
    for c in chunks {
        match prev {
            None => {
                put_varint(&mut body, c.min_time);
                put_uvarint(&mut body, c.max_time.wrapping_sub(c.min_time) as u64);
                put_uvarint(&mut body, c.chunk_ref.0);
            }
            Some(p) => {
                // The writer guarantees p.max_time < c.min_time and p.chunk_ref <
                // c.chunk_ref, so both differences are positive and exact in u64.
                put_uvarint(&mut body, c.min_time.wrapping_sub(p.max_time) as u64);
                put_uvarint(&mut body, c.max_time.wrapping_sub(c.min_time) as u64);
                put_uvarint(&mut body, c.chunk_ref.0 - p.chunk_ref.0);
            }
        }
        prev = Some(c);
    }
    put_uvarint(out, body.len() as u64);
    out.extend_from_slice(&body);
    put_u32(out, crc32c::crc32c(&body));
}

/// A postings list: `len | count | first ref | (ref - previous ref)* | crc32c`, the CRC
/// covering the bytes between `len` and itself.
fn encode_postings(refs: &[u64]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + refs.len() * 2);
    put_uvarint(&mut body, refs.len() as u64);
    let mut prev = 0;
    for (i, &r) in refs.iter().enumerate() {
        put_uvarint(&mut body, if i == 0 { r } else { r - prev });
        prev = r;
    }
    let mut out = Vec::with_capacity(body.len() + 14);
    put_uvarint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    put_u32(&mut out, crc32c::crc32c(&body));
    out
}

/// The file being written, its position, and the running CRC of the current section.
struct Out<'a> {
    path: &'a Path,
    w: BufWriter<File>,
    pos: u64,
    crc: u32,
}

impl Out<'_> {
    fn write(&mut self, b: &[u8]) -> Result<(), StorageError> {
        self.w.write_all(b).map_err(StorageError::io(self.path))?;
        self.pos += b.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, b);
        Ok(())
    }

    /// Writes a whole section whose body is in memory.
    fn small_section(&mut self, body: &[u8]) -> Result<(), StorageError> {
        let start = self.pos;
        self.begin_section()?;
        self.write(body)?;
        self.end_section(start)
    }

    /// Writes a placeholder length and starts the section's CRC.
    fn begin_section(&mut self) -> Result<(), StorageError> {
        self.write(&[0; SECTION_LEN_LEN])?;
        self.crc = 0;
        Ok(())
    }

    /// Appends the CRC of the section that started at `start` and patches its length.
    fn end_section(&mut self, start: u64) -> Result<(), StorageError> {
        let len = self.pos - start - SECTION_LEN_LEN as u64;
        let crc = self.crc;
        self.write(&crc.to_le_bytes())?;
        self.w.flush().map_err(StorageError::io(self.path))?;
        self.w
            .get_ref()
            .write_all_at(&len.to_le_bytes(), start)
            .map_err(StorageError::io(self.path))
    }
}
